#!/usr/bin/env python
"""The slab motion verdict per site, on artefacts made in each scanner's own space, in one command.

    python benchmarks/bench_slab_sites.py [--seed 2028] [--model-dir DIR ...] [--json out.json]

``--model-dir`` (repeatable; default: the shipped slab model) scores every model on the very same
images, so a candidate and the shipped model are compared in one run.

Each clean scan of the shared data (the slab model's held-out IXI subjects and every other
scanner) is corrupted on its raw grid by the independent scanner-space simulator
(:mod:`bids_qc.evaluation.independent_artefacts`, code that trained nothing): image 0 is the clean
scan, the others get motion, noise and contrast grades drawn at random (P(0, 1, 2) = 0.5, 0.25,
0.25 each). Each image is stacked as the app stacks it and scored by the slab detector. Per site:

- the AUC of motion (grade >= 1) vs none for the detector and, beside it on the same images,
  Tenengrad and native SNR (negated, higher = worse);
- the shipped verdict (the detector's own rule, :meth:`SlabDetector.verdict`: score >= threshold,
  and no verdict for voxels coarser than ``detector.MAX_VOXEL_MM``) and the scanner-group verdict
  (:mod:`bids_qc.evaluation.slab_group_verdict`, the site as the group): images without motion flagged,
  images with motion flagged, balanced accuracy (a site with fewer than ``slab_group_verdict.MIN_GROUP`` scored
  images keeps the shipped verdict, as the app does). Images without a verdict are counted apart
  and left out of both verdicts' figures.

Pooled rows: the sites held out of all training (uih, prisma, decubitus), the other sites, IXI.
The six real motion pairs are scored as one group of 12 slabs. Clean scans are prepared
(registered once for the tissue masks) into ``--scans`` and reused; they stay on their own grid
(``--finest-mm 0``, as the app reads them) unless asked otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_SLAB_MODEL_DIR  # noqa: E402
from bids_qc.evaluation.independent_artefacts import draw_image  # noqa: E402
from bids_qc.evaluation.slab_group_verdict import relative_flags  # noqa: E402
from bids_qc.scanner_space import voxel_sizes  # noqa: E402
from bids_qc.slab_detector.detector import load_detector, score_stack  # noqa: E402
from bids_qc.slab_detector.slices import SPACING_MM, to_float16, to_ras_stack  # noqa: E402
from bids_qc.training.metrics import auc, binary_scores  # noqa: E402
from bids_qc.training.scanner_data import (  # noqa: E402
    HELDOUT_SITES,
    load_scan_npz,
    prepare_scans,
    shared_data_sources,
)
from bids_qc.training.slab.evaluation import baseline_formulas, real_pairs  # noqa: E402

SCORES = ("detector", "tenengrad", "snr_native")


def _image(job) -> dict:
    """One image of one prepared scan: its slab stack and motion label (a worker's job), read
    from ``cache`` when an earlier run stored the same draw there (same prepared file, same seed
    and position in the draw)."""
    scan_path, k, i, seed, cache = job
    out = None if cache is None else Path(cache) / f"{Path(scan_path).stem}-{i:03d}.npz"
    draw = [str(scan_path), Path(scan_path).stat().st_mtime_ns, k, i, seed]
    if out is not None and out.exists():
        with np.load(out) as z:
            row = json.loads(str(z["row"]))
            if row.get("draw") == draw:
                return {**row, "stack": z["stack"]}
    scan = load_scan_npz(scan_path)
    data, asked, measured, _ = draw_image(scan, seed, k, i)
    grades = measured or asked
    stack = to_ras_stack(data, scan.affine)
    row = {"name": f"{scan.name}-{i:03d}", "site": scan.site, "grades": grades, "draw": draw,
           "voxel_mm": voxel_sizes(scan.affine).tolist(), **baseline_formulas(stack, (SPACING_MM,) * 3)}
    row["stack"] = to_float16(stack)
    if out is not None:
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, stack=row["stack"], row=json.dumps({k: v for k, v in row.items() if k != "stack"},
                                                         default=float))
        tmp.replace(out)
    return row


def make_images(scans: list[Path], seed: int, per_scan: dict, nprocs: int,
                cache: Path | None = None) -> list[dict]:
    """Every image of the draw (``per_scan``: images per scan by site, besides the clean one);
    ``cache``: a folder for this seed's images, read instead of simulating when present."""
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k, path in enumerate(scans):
        site = load_scan_npz(path).site
        jobs += [(str(path), k, i, seed, cache and str(cache))
                 for i in range(per_scan.get(site, per_scan["default"]) + 1)]
    with get_context("fork").Pool(max(1, nprocs)) as pool:
        rows = []
        for n, row in enumerate(pool.imap(_image, jobs), 1):
            rows.append(row)
            if n % 20 == 0 or n == len(jobs):
                print(f"  {n}/{len(jobs)} images", flush=True)
    return rows


def _auc(labels, scores) -> float:
    """AUC over the images the score is defined for (native SNR needs air around the head)."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    ok = np.isfinite(scores)
    return auc(labels[ok], scores[ok])


def _verdict_row(motion, flags) -> dict:
    """Counts of one verdict; ``flags`` entries of None (no verdict) are counted apart and left out
    of the balanced accuracy."""
    judged = np.array([f is not None for f in flags], bool)
    motion = np.asarray(motion, bool)[judged]
    flags = np.array([bool(f) for f in flags], bool)[judged]
    ba = binary_scores(motion.astype(int), flags)["balanced_accuracy"] if judged.any() else float("nan")
    return {"still_flagged": int(flags[~motion].sum()), "n_still": int((~motion).sum()),
            "moved_flagged": int(flags[motion].sum()), "n_moved": int(motion.sum()),
            "no_verdict": int((~judged).sum()), "balanced_accuracy": ba}


def site_table(rows: list[dict], detector) -> dict:
    """Per site and pooled: AUCs of the three scores, and both verdicts."""
    scored = [r for r in rows if r["detector"] is not None]
    sites = np.array([r["site"] for r in scored], object)
    scores = np.array([r["detector"] for r in scored], float)
    motion = np.array([r["grades"]["motion"] > 0 for r in scored])
    shipped = [detector.verdict(r["detector"], r["voxel_mm"])[0] for r in scored]
    _, group = relative_flags(scores, sites, detector.threshold)
    group = [None if s is None else bool(s) if g is None else g  # small group: shipped
             for g, s in zip(group, shipped)]
    groups = {s: sites == s for s in sorted(set(sites))}
    groups["held-out sites"] = np.isin(sites, HELDOUT_SITES)
    groups["other sites"] = ~np.isin(sites, HELDOUT_SITES) & (sites != "ixi-hh")
    out = {}
    for name, sel in groups.items():
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        out[name] = {"n": int(idx.size),
                     "auc": {s: _auc(motion[idx], [scored[i][s] for i in idx]) for s in SCORES},
                     "shipped": _verdict_row(motion[idx], [shipped[i] for i in idx]),
                     "group": _verdict_row(motion[idx], [group[i] for i in idx])}
    return out


def real_pair_group(detector, pairs: Path) -> dict:
    rows = real_pairs(detector, pairs)["rows"]
    scores = [r["detector"] for r in rows]
    _, group = relative_flags(scores, ["pairs"] * len(rows), detector.threshold)
    motion = [bool(r["motion"]) for r in rows]
    return {"shipped": _verdict_row(motion, [r["verdict"] for r in rows]),
            "group": _verdict_row(motion, group),
            "auc": {s: _auc(motion, [r[s] for r in rows]) for s in SCORES}}


def _fmt(v: dict) -> str:
    return (f"{v['still_flagged']}/{v['n_still']} | {v['moved_flagged']}/{v['n_moved']} | "
            f"{v['balanced_accuracy']:.3f} | {v['no_verdict']}")


def format_table(model_id: str, table: dict, pairs: dict | None) -> str:
    lines = [f"Slab motion per site, {model_id}: AUC of motion vs none, and the verdicts "
             "(still flagged | moved flagged | balanced accuracy, over the images given a verdict | "
             "images without one)", "",
             "| site | n | AUC detector | AUC Tenengrad | AUC native SNR | still flagged | moved flagged "
             "| BA | no verdict | group: still flagged | moved flagged | BA | no verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = dict(table)
    if pairs:
        rows["real pairs (one group)"] = {"n": 12, **pairs}
    for name, r in rows.items():
        a = r["auc"]
        lines.append(f"| {name} | {r['n']} | {a['detector']:.3f} | {a['tenengrad']:.3f} | "
                     f"{a['snr_native']:.3f} | {_fmt(r['shipped'])} | {_fmt(r['group'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, action="append")
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--scans", type=Path, default=Path(tempfile.gettempdir()) / "bids_qc_slab_sites",
                    help="prepared clean scans (made here when missing, reused after)")
    ap.add_argument("--seed", type=int, default=2028)
    ap.add_argument("--per-site-scan", type=int, default=14, help="images per scan of another site")
    ap.add_argument("--per-subject", type=int, default=5, help="images per held-out IXI subject")
    ap.add_argument("--finest-mm", type=float, default=0.0,
                    help="re-sample scans with finer voxels to this (default 0: their own grid, "
                         "as the app scores them)")
    ap.add_argument("--cache", type=Path, help="keep each image's stack and label here (one "
                    "folder per seed), so a later run of the same seed scores new models on the "
                    "same images without simulating again")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if not (args.data / "vendors").is_dir():
        print(f"no shared data at {args.data}: nothing to evaluate")
        return 0
    detectors = [load_detector(d) for d in (args.model_dir or [DEFAULT_SLAB_MODEL_DIR])]
    test = set().union(*(d.manifest["training"]["test_subjects"] for d in detectors))
    sources = [(n, s, p) for n, s, p in shared_data_sources(args.data) if s != "ixi-hh" or n in test]
    t = time.perf_counter()
    scans = prepare_scans(sources, args.scans, args.nprocs, finest_mm=args.finest_mm)
    print(f"{len(scans)} clean scans prepared in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    rows = make_images(scans, args.seed, {"ixi-hh": args.per_subject, "default": args.per_site_scan},
                       args.nprocs, args.cache and args.cache / f"seed-{args.seed}")
    print(f"{len(rows)} images simulated in {time.perf_counter() - t:.0f} s")
    results = {}
    stacks = [r.pop("stack").astype(np.float32) for r in rows]
    for detector in detectors:
        for r, stack in zip(rows, stacks):
            r["detector"] = score_stack(detector.net, stack)
        table = site_table(rows, detector)
        pairs = (real_pair_group(detector, args.data / "motion_pairs")
                 if (args.data / "motion_pairs").is_dir() else None)
        print("\n" + format_table(detector.model_id, table, pairs))
        results[detector.model_id] = {"threshold": detector.threshold, "sites": table,
                                      "real_pairs": pairs,
                                      "scores": {r["name"]: r["detector"] for r in rows}}
    if args.json:
        images = [{k: v for k, v in r.items() if k != "detector"} for r in rows]
        args.json.write_text(json.dumps({"seed": args.seed, "models": results, "images": images},
                                        indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
