"""``bids-qc-simulate``: write simulated-artefact versions of a BIDS dataset as a derivative.

Each T1w is preprocessed (reoriented, N4, affine to MNI, cropped to the model box, reference
intensity scale: unnormalised), then the artefact is simulated with the published preset and
written as ``sub-X/[ses-Y/]anat/<stem>_space-MNI152NLin2009aSym_desc-<artefact><severity>_T1w.nii.gz``.
``labels.tsv`` lists every written file with its grades and the exact sampled parameters (JSON),
so a synthetic test set is reproducible from ``--seed``.

The output is a valid BIDS derivative dataset (``dataset_description.json`` with ``DatasetType``
``derivative``, ``GeneratedBy`` and the source dataset; a JSON sidecar naming each image's source;
``labels.tsv`` listed in ``.bidsignore``), so ``bids-qc <output_dir> <qc_dir> participant`` assesses
the simulated images with BIDS validation on.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from bids_qc import __version__
from bids_qc.exceptions import ScanError
from bids_qc.outputs import atomic_path, atomic_write_json, atomic_write_text, derivative_path
from bids_qc.preprocessing import TEMPLATE_NAME, ModelGrid, preprocess
from bids_qc.record import ARTEFACTS
from bids_qc.simulation import MOTION_TIMINGS, PRESETS, simulate
from bids_qc.training.cache import find_t1w

LOGGER = logging.getLogger("bids_qc.simulate")
GRADE = {"none": 0, "moderate": 1, "severe": 2}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bids-qc-simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("output_dir", type=Path)
    p.add_argument("--artefact", choices=sorted({a for a, _ in PRESETS}), required=True)
    p.add_argument("--severity", choices=["moderate", "severe"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--motion-timing", choices=MOTION_TIMINGS, default="torchio",
                   help="when the simulated movements happen in k-space: as TorchIO's RandomMotion "
                        "(default, the published protocol), at sorted uniform times, or either")
    p.add_argument("--include-clean", action="store_true", help="also write the clean volume")
    p.add_argument("--participant-label", nargs="*", default=None)
    return p


def write_description(out: Path, bids_dir: Path, name: str) -> None:
    """``dataset_description.json`` of a BIDS derivative dataset (the source dataset's licence is
    kept: derived images carry it) and a ``.bidsignore`` listing ``labels.tsv``."""
    try:
        source = json.loads((bids_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        source = {}
    source = source if isinstance(source, dict) else {}
    entry = {"URL": bids_dir.as_uri(), **({"DOI": source["DatasetDOI"]} if source.get("DatasetDOI") else {})}
    description = {
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids-qc-simulate", "Version": __version__,
                         "Description": "bids_qc artefact simulation (published presets)"}],
        "SourceDatasets": [entry], "DatasetLinks": {"raw": bids_dir.as_uri()},
        **({"License": source["License"]} if source.get("License") else {}),
    }
    atomic_write_json(out / "dataset_description.json", description)
    atomic_write_text(out / ".bidsignore", "labels.tsv\n")


def _write(path: Path, volume: np.ndarray, affine: np.ndarray, source_file: str) -> None:
    """The image and its JSON sidecar (``Sources``: the raw scan it was simulated from), each
    written atomically (:mod:`bids_qc.outputs`)."""
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(tmp))
    sidecar = path.with_name(path.name[: -len(".nii.gz")] + ".json")
    atomic_write_json(sidecar, {"Sources": [f"bids:raw:{source_file}"]})


def simulated_path(out: Path, rel: Path, stem: str, desc: str) -> Path:
    """``out/rel/<stem with space-MNI152NLin2009aSym_desc-<desc>>.nii.gz``
    (:func:`bids_qc.outputs.derivative_path`); ``stem``: the source's BIDS name."""
    return derivative_path(out / rel, stem, ".nii.gz",
                           entities=(("space", TEMPLATE_NAME), ("desc", desc)))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    bids_dir, out = args.bids_dir.resolve(), args.output_dir.resolve()
    if not bids_dir.is_dir():
        LOGGER.error("BIDS directory %s does not exist", bids_dir)
        return 66
    if out == bids_dir or bids_dir in out.parents and "derivatives" not in out.relative_to(bids_dir).parts:
        LOGGER.error("refusing to write inside the input dataset: %s", out)
        return 64
    out.mkdir(parents=True, exist_ok=True)
    write_description(out, bids_dir, f"bids_qc simulated {args.severity} {args.artefact}")
    grid = ModelGrid()
    scans = find_t1w(bids_dir)
    if args.participant_label:
        wanted = {s.removeprefix("sub-") for s in args.participant_label}
        scans = [(s, p) for s, p in scans if s in wanted]
    rows, failed = [], 0
    for i, (subject, path) in enumerate(tqdm(scans, desc="simulating", unit="scan")):
        try:
            pre = preprocess(path, grid=grid, with_registered=False)
        except ScanError as exc:
            LOGGER.warning("skipped: %s", exc)
            failed += 1
            continue
        if pre.scaled is None:
            LOGGER.warning("skipped %s: %s", path, "; ".join(pre.warnings))
            failed += 1
            continue
        rng = np.random.default_rng([args.seed, i])
        grades = {a: 0 for a in ARTEFACTS}
        grades[args.artefact] = GRADE[args.severity]
        volume, applied = simulate(pre.scaled, grid.affine, grades, rng, args.motion_timing)
        stem = path.name.split(".nii")[0]
        rel = path.parent.relative_to(bids_dir)
        target = simulated_path(out, rel, stem, f"{args.artefact}{args.severity}")
        source_file = path.relative_to(bids_dir).as_posix()
        _write(target, volume, grid.affine, source_file)
        rows.append({"path": str(target.relative_to(out)), "participant_id": f"sub-{subject}",
                     "source_file": source_file, **grades,
                     "params": json.dumps(applied)})
        if args.include_clean:
            clean = simulated_path(out, rel, stem, "clean")
            _write(clean, pre.scaled, grid.affine, source_file)
            rows.append({"path": str(clean.relative_to(out)), "participant_id": f"sub-{subject}",
                         "source_file": source_file, **{a: 0 for a in ARTEFACTS}, "params": "[]"})
    atomic_write_text(out / "labels.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
    LOGGER.info("wrote %d images (%d scans skipped) to %s", len(rows), failed, out)
    return 0 if not failed else 65


if __name__ == "__main__":
    sys.exit(main())
