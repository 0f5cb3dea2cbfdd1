#!/usr/bin/env python
"""Every voxel geometry gets a verdict: a real scan resampled to many geometries, plus the
hand-made bad-input corpus, each run through the app's participant level.

    python benchmarks/bench_geometries.py                         # ../shared/data, first IXI subject
    python benchmarks/bench_geometries.py /path/to/data --subject IXI013 --no-corpus
    python benchmarks/bench_geometries.py --scan some_T1w.nii.gz  # any scan instead of IXI

The scan is reoriented to RAS, smoothed along every axis made coarser (Gaussian, FWHM = the
added spacing, as the app's own anti-aliasing) and resampled (linear) to each geometry of
:data:`GEOMETRIES_MM`, stored as int16. The finest grid is cropped to the head (intensity above
5 % of the 99th percentile, plus 10 mm) to keep it small in memory. Each dataset is processed by
``run.py <dataset> <out> participant`` in a child process; the table lists, per scan: geometry
(mm, and voxels), status, the verdict (tier and grades, "no tier" with the slab motion verdict, or
"cannot judge: <why>" / the error) and the seconds the app spent on it (``timings.total``).
Exit code 0 when every scan got a verdict or a plain "cannot judge"; 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data"))

#: (x, y, z) voxel sizes in mm of the RAS-reoriented scan: isotropic 0.5 to 8 mm, thin slices,
#: thick slices (clinical 2D), one coarse axis in each direction.
GEOMETRIES_MM = [
    (0.5, 0.5, 0.5), (0.7, 0.67, 0.67), (1.0, 1.0, 1.0), (1.0, 1.0, 1.5), (1.0, 1.0, 2.0),
    (1.2, 1.2, 1.2), (2.0, 2.0, 2.0), (0.9, 0.9, 5.0), (2.0, 2.0, 5.0), (1.0, 4.0, 1.0),
    (8.0, 1.0, 1.0), (1.0, 1.0, 8.0), (3.0, 3.0, 3.0), (4.0, 4.0, 4.0), (6.0, 6.0, 6.0),
    (8.0, 8.0, 8.0),
]


def geometry_label(zooms) -> str:
    return "x".join(f"{z:g}" for z in zooms)


def resample_scan(img, zooms, crop_to_head: bool = False):
    """``img`` (any orientation) resampled to RAS voxels of ``zooms`` mm, int16."""
    import nibabel as nib
    from nibabel.processing import resample_to_output
    from scipy.ndimage import gaussian_filter

    img = nib.as_closest_canonical(img)
    data = np.asarray(img.dataobj, dtype=np.float32)
    source = np.asarray(img.header.get_zooms()[:3], dtype=float)
    target = np.asarray(zooms, dtype=float)
    sigma_vox = np.sqrt(np.maximum(target**2 - source**2, 0.0)) / 2.355 / source
    if sigma_vox.max() > 0:
        data = gaussian_filter(data, sigma_vox, mode="nearest")
    affine = img.affine.copy()
    if crop_to_head:
        head = data > 0.05 * np.percentile(data, 99)
        margin = np.ceil(10.0 / source).astype(int)
        idx = np.argwhere(head)
        lo = np.maximum(idx.min(axis=0) - margin, 0)
        hi = np.minimum(idx.max(axis=0) + margin + 1, data.shape)
        data = data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    out = resample_to_output(nib.Nifti1Image(data, affine), voxel_sizes=tuple(target), order=1)
    values = np.clip(np.round(np.asarray(out.dataobj)), -32768, 32767).astype(np.int16)
    return nib.Nifti1Image(values, out.affine)


def write_geometry_dataset(scan: Path, root: Path) -> dict[str, str]:
    """A BIDS dataset with one subject per geometry; returns ``{bids_name: geometry text}``."""
    import nibabel as nib

    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": f"bids_qc geometry grid of {scan.name}", "BIDSVersion": "1.9.0",
         "DatasetType": "raw"}))
    source = nib.load(str(scan))
    names = {}
    for i, zooms in enumerate(GEOMETRIES_MM, start=1):
        img = resample_scan(source, zooms, crop_to_head=min(zooms) < 0.7)
        sub = f"geo{i:02d}"
        path = root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(path))
        names[f"sub-{sub}_T1w"] = (f"{geometry_label(zooms)} mm "
                                   f"({'x'.join(map(str, img.shape))})")
    return names


def write_corpus_dataset(root: Path) -> dict[str, str]:
    """The hand-made bad-input corpus of ``tests/corpus.py``; ``{bids_name: kind}``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from corpus import build_corpus

    names = {}
    for name, kind in build_corpus(root).items():
        for bids_name in kind.bids_names:
            names[bids_name] = f"corpus: {name}"
    return names


def run_participant(bids_dir: Path, out: Path, nprocs: int, extra=()) -> tuple[int, float]:
    cmd = [sys.executable, str(ROOT / "run.py"), str(bids_dir), str(out), "participant",
           "--nprocs", str(nprocs), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NIPYPE_NO_ET": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace")
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 65):
        sys.stderr.write(proc.stderr[-3000:])
    return proc.returncode, wall


def verdict(record: dict | None) -> tuple[str, str, bool]:
    """``(status, verdict text, judged or plainly refused)`` of one record."""
    if record is None:
        return "missing", "no _qc.json written", False
    status = record.get("status") or "?"
    if status == "error":
        message = " ".join(str((record.get("error") or {}).get("message") or "").split())
        return status, f"error: {message[:100]}", True
    reason = record.get("cannot_judge")
    if reason:
        return status, f"cannot judge: {' '.join(str(reason).split())[:90]}", True
    slab = record.get("slab_motion") or {}
    slab_text = ""
    if slab.get("score") is not None:
        slab_text = f"; slab motion {'yes' if slab.get('motion') else 'no'} ({slab['score']:.3f})"
    if record.get("tier") is not None:
        grades = record.get("grades") or {}
        text = f"tier {record['tier']} (" + ", ".join(f"{a[0]}{g}" for a, g in grades.items()) + ")"
        return status, text + slab_text, True
    if slab_text:
        return status, "no tier (partial coverage)" + slab_text, True
    return status, "NO VERDICT and no reason given", False


def table_rows(out: Path, names: dict[str, str]) -> list[tuple[str, str, str, str, bool]]:
    records = {}
    for path in out.glob("sub-*/**/*_qc.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        records[record.get("bids_name") or path.name[: -len("_qc.json")]] = record
    rows = []
    for bids_name in sorted(set(names) | set(records)):
        record = records.get(bids_name)
        status, text, fine = verdict(record)
        seconds = (record or {}).get("timings", {}).get("total")
        rows.append((names.get(bids_name, bids_name), status, text,
                     "-" if seconds is None else f"{seconds:.1f}", fine))
    return rows


def print_table(title: str, rows, wall: float, code: int) -> None:
    print(f"\n{title}: run.py exit {code}, {wall:.1f} s wall")
    width = max(len(r[0]) for r in rows)
    print(f"{'geometry / input':<{width}}  {'status':<7}  {'seconds':>7}  verdict")
    for name, status, text, seconds, _ in rows:
        print(f"{name:<{width}}  {status:<7}  {seconds:>7}  {text}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder (default ../shared/data or $BIDS_QC_DATA)")
    parser.add_argument("--subject", default=None,
                        help="IXI subject label (default: the first in data/ixi)")
    parser.add_argument("--scan", type=Path, default=None, help="use this T1w file instead")
    parser.add_argument("--no-corpus", action="store_true", help="skip the hand-made corpus")
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write datasets and outputs here instead of a deleted temp folder")
    args = parser.parse_args(argv)

    scan = args.scan
    if scan is None:
        ixi = args.data / "ixi"
        label = args.subject or next((p.name[4:] for p in sorted(ixi.glob("sub-*"))), None)
        scan = ixi / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz"
    if not scan.is_file():
        raise SystemExit(f"scan not found: {scan} (give the data folder or --scan)")
    print(f"scan {scan}; {len(GEOMETRIES_MM)} geometries; OMP_NUM_THREADS=1, --nprocs "
          f"{args.nprocs}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    all_fine = True
    with tempfile.TemporaryDirectory(prefix="bids_qc_geometries_") as tmp:
        base = args.keep or Path(tmp)
        started = time.perf_counter()
        names = write_geometry_dataset(scan, base / "geometries")
        print(f"resampled in {time.perf_counter() - started:.1f} s")
        code, wall = run_participant(base / "geometries", base / "out_geometries", args.nprocs)
        rows = table_rows(base / "out_geometries", names)
        print_table("geometries", rows, wall, code)
        all_fine &= all(r[4] for r in rows)
        if not args.no_corpus:
            names = write_corpus_dataset(base / "corpus")
            code, wall = run_participant(base / "corpus", base / "out_corpus", args.nprocs)
            rows = table_rows(base / "out_corpus", names)
            print_table("hand-made corpus", rows, wall, code)
            all_fine &= all(r[4] for r in rows)
    print("\nevery scan got a verdict or a plain reason" if all_fine
          else "\nSOME SCANS GOT NEITHER A VERDICT NOR A REASON (see above)")
    return 0 if all_fine else 1


if __name__ == "__main__":
    sys.exit(main())
