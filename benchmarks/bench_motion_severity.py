#!/usr/bin/env python
"""How much of motion's severity an image shows: the damage each simulator leaves, per amplitude.

    python benchmarks/bench_motion_severity.py [--data ../shared/data] [--subjects 16] [--per-grade 2] \
        [--seed 0] [--json out.json]

The grades of motion are defined by amplitude (published: 2-4 degrees / mm moderate, 5-8 severe),
the ones of noise and contrast by what the image shows (the SNR reached, the ND-WGM drop). This
script asks whether the amplitude is something an image can show. For each clean scan of the
sites training saw (IXI training subjects, never the held-out ones; Philips ADNI, Utah,
studyforrest; no held-out site), it moves the head at both amplitude classes with three
simulators and measures the **motion damage** of every image
(:func:`bids_qc.scanner_space.motion_damage`: the relative difference from the
nearest still position of the head, ghosts in the air included):

1. ``box``: TorchIO motion on the preprocessed 2.5 mm model box (:mod:`bids_qc.simulation`: how the
   shipped 3D detectors were trained, and where they separate the classes at 98 %);
2. ``native-torchio``: the project's scanner-space simulator (:mod:`bids_qc.scanner_space`:
   TorchIO along the scan's own k-space axis, jumps / drift / nodding) on the raw scan;
3. ``native-independent``: the evaluation simulator of ``bench_scanner_space.py``
   (:mod:`bids_qc.evaluation.independent_artefacts`: random block order) on the raw scan.

TorchIO keeps the reference position over the k-space centre, so its damage is measured against
the clean image; the independent simulator's against the nearest of its positions. Prints, per
simulator, the damage quantiles of each class, the AUC of the damage between the classes (how far
the energy of the damage alone tells severe from moderate) and its Youden limit with the balanced
accuracy there. ``bench_scanner_space.py`` prints the same AUC on its own draws, beside the
severe-motion detector's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc import scanner_space as ss  # noqa: E402
from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.evaluation import independent_artefacts as ia  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.preprocessing import preprocess  # noqa: E402
from bids_qc.simulation import SEVERITY_NAMES, apply, sample_params  # noqa: E402
from bids_qc.training.calibration import youden_threshold  # noqa: E402
from bids_qc.training.metrics import auc, binary_scores  # noqa: E402
from bids_qc.training.scanner_data import HELDOUT_SITES, shared_data_sources  # noqa: E402

SIMULATORS = ("box", "native-torchio", "native-independent")


def damages(path: Path, grid, rng: np.random.Generator, per_grade: int) -> list[dict]:
    """``{"simulator", "grade", "damage"}`` of ``per_grade`` images per class and simulator."""
    img = nib.load(str(path))
    clean = np.asarray(img.dataobj, np.float32)
    zooms = ss.voxel_sizes(img.affine)
    box = preprocess(path, with_registered=False).scaled.astype(np.float32)
    out = []
    for grade in (1, 2):
        for _ in range(per_grade):
            moved = apply(box, grid.affine, sample_params("motion", SEVERITY_NAMES[grade], rng))
            out.append({"simulator": "box", "grade": grade, "damage": ss.motion_damage(moved, [box])})
            params = ss.sample_artefacts({"motion": grade}, rng)[0]
            moved = ss.apply_motion(clean, img.affine, params)
            out.append({"simulator": "native-torchio", "grade": grade,
                        "damage": ss.motion_damage(moved, [clean])})
            _, info = ia.motion(clean, zooms, grade, rng)
            out.append({"simulator": "native-independent", "grade": grade, "damage": info["damage"]})
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    print(f"{'simulator':<20}{'n':>4}  {'moderate damage p10/p50/p90':<30}{'severe p10/p50/p90':<24}"
          f"{'AUC':>6}  {'Youden limit':>12}  {'b.acc %':>7}")
    for sim in SIMULATORS:
        sel = [r for r in rows if r["simulator"] == sim]
        y = np.array([r["grade"] == 2 for r in sel], int)
        d = np.array([r["damage"] for r in sel])
        q = {g: np.percentile(d[y == g - 1], [10, 50, 90]).round(3).tolist() for g in (1, 2)}
        limit = youden_threshold(y, d, bounds=(0.0, np.inf))  # damage, not a probability
        bacc = 100 * binary_scores(y, d >= limit)["balanced_accuracy"]
        out[sim] = {"n": len(sel), "moderate_p10_50_90": q[1], "severe_p10_50_90": q[2],
                    "auc": auc(y, d), "youden_limit": limit, "youden_bacc": bacc}
        print(f"{sim:<20}{len(sel):>4}  {'/'.join(f'{v:.3f}' for v in q[1]):<30}"
              f"{'/'.join(f'{v:.3f}' for v in q[2]):<24}{out[sim]['auc']:>6.3f}  {limit:>12.3f}  {bacc:>7.1f}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    p.add_argument("--subjects", type=int, default=16, help="IXI training subjects (drawn at random)")
    p.add_argument("--per-grade", type=int, default=2, help="images per amplitude class, scan and simulator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}")
        return 1
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    test = set(bundle.manifest["training"]["test_subjects"])
    rng = np.random.default_rng(args.seed)
    src = shared_data_sources(args.data)
    ixi = [s for s in src if s[1] == "ixi-hh" and s[0] not in test]
    ixi = [ixi[i] for i in sorted(rng.choice(len(ixi), min(args.subjects, len(ixi)), replace=False))]
    others = [s for s in src if s[1] != "ixi-hh" and s[1] not in HELDOUT_SITES]
    rows, t0 = [], time.perf_counter()
    for name, site, path in ixi + others:
        got = damages(path, bundle.grid, rng, args.per_grade)
        rows += [{**r, "scan": name, "site": site} for r in got]
        print(f"  {name} ({site}): {len(got)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\nmotion damage by amplitude class ({len(ixi)} IXI training subjects, "
          f"{len(others)} scans of other trained-on sites)")
    result = {"all": summary(rows)}
    print("\nIXI only")
    result["ixi-hh"] = summary([r for r in rows if r["site"] == "ixi-hh"])
    print("\nother sites only")
    result["other sites"] = summary([r for r in rows if r["site"] != "ixi-hh"])
    if args.json:
        args.json.write_text(json.dumps({"summary": result, "images": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
