#!/usr/bin/env python
"""At which drop of grey/white contrast does each contrast detector fire, scan by scan?

    python benchmarks/bench_contrast_curves.py [--data ../shared/data] [--cache /tmp/bids_qc_ss_bench]
        [--ixi 6] [--json out.json]

The contrast grade is defined by the drop of ND-WGM it causes on the scan (3 % moderate, 22 %
severe; :mod:`bids_qc.scanner_space`). This takes clean scans - ``--ixi`` of the model's held-out
IXI subjects and every scan of the other sites - and, on each raw grid, lowers the contrast with
two different curves at five strengths: the training simulator's gamma on the scan's intensity
range, and the evaluation's power law towards the white-matter level
(:mod:`bids_qc.evaluation.independent_artefacts`). Each image goes through the app's
preprocessing (the clean scan's registration reused) and detectors, and the bench prints, per
scan and curve, the drop reached and the call: ``-`` none, ``M`` moderate, ``S`` severe, at the
shipped thresholds. If the two curves give the same calls at the same drops, the detectors read
the contrast itself, not the curve; where the calls move from scan to scan at the same drop, they
read the contrast against the training scans', not the drop. Beside it: the app's ND-WGM of
each clean scan. About 6 minutes on 2 cores for 13 scans. Scans are prepared as
``bench_scanner_space.py`` does (same cache).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc import scanner_space as ss  # noqa: E402
from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.evaluation import independent_artefacts as ia  # noqa: E402
from bids_qc.evaluation.detector_probabilities import predict  # noqa: E402
from bids_qc.grading import grades_from_probabilities  # noqa: E402
from bids_qc.metrics import metrics_of  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.training.scanner_data import (  # noqa: E402
    load_scan_npz,
    prepare_scans,
    preprocess_variant,
    shared_data_sources,
)

LOG_GAMMAS = (-0.05, -0.15, -0.25, -0.35, -0.45)  # training simulator (published ranges and beyond)
POWERS = (0.93, 0.85, 0.77, 0.70, 0.62)  # evaluation's curve, about the same drops


def lowered(data: np.ndarray, wm: np.ndarray, curve: str, q: float) -> np.ndarray:
    """``data`` with less grey/white contrast, by the training simulator's ``gamma`` curve (log gamma
    ``q``, :func:`bids_qc.scanner_space.gamma_contrast`) or the evaluation's ``power`` curve
    (exponent ``q``, :func:`bids_qc.evaluation.independent_artefacts.power_contrast`)."""
    return ss.gamma_contrast(data, q) if curve == "gamma" else ia.power_contrast(data, wm, q)


def call(probs: dict, thresholds: dict) -> str:
    """The contrast grade the verdict gives (:func:`bids_qc.grading.grades_from_probabilities`) as
    ``-`` / ``M`` / ``S``."""
    return "-MS"[grades_from_probabilities(probs, thresholds)["contrast"]]


def scan_curves(scan, bundle) -> dict:
    """The clean scan's app ND-WGM and, per curve, ``[(drop, call, P moderate, P severe)]``."""
    data = scan.data.astype(np.float32)
    wm, gm = ss.tissue_masks(data.shape, scan.affine, scan.template_to_subject)
    before = ss.nd_wgm_native(data, wm, gm)

    pre = preprocess_variant(scan, data, scan.affine, bundle.grid, with_registered=True)
    metrics, _ = metrics_of(pre)
    out = {"scan": scan.name, "site": scan.site, "nd_wgm_clean": float(metrics["nd_wgm"])}
    for curve, qs in (("gamma", LOG_GAMMAS), ("power", POWERS)):
        rows = []
        for q in qs:
            image = lowered(data, wm, curve, q)
            probs = predict(bundle, preprocess_variant(scan, image, scan.affine, bundle.grid).model_input)
            rows.append({"q": q, "drop": 1 - ss.nd_wgm_native(image, wm, gm) / before,
                         "call": call(probs, bundle.thresholds),
                         "p_moderate": probs["contrast_moderate"], "p_severe": probs["contrast_severe"]})
        out[curve] = rows
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bids_qc_ss_bench"))
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--ixi", type=int, default=6, help="held-out IXI subjects (first N)")
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}")
        return 1
    bundle = load_bundle(args.model)
    test = sorted(bundle.manifest["training"]["test_subjects"])[:args.ixi]
    src = [(n, s, f) for n, s, f in shared_data_sources(args.data) if s != "ixi-hh" or n in test]
    t0 = time.perf_counter()
    prepared = prepare_scans(src, args.cache / "scans_finest-0", args.nprocs, finest_mm=0)
    results = []
    print(f"{'scan':<22}{'ND-WGM':>7}  curve   calls at the drop reached (- none, M moderate, S severe)")
    for path in sorted(prepared):
        r = scan_curves(load_scan_npz(path), bundle)
        results.append(r)
        for curve in ("gamma", "power"):
            calls = "  ".join(f"{e['drop']:.2f}:{e['call']}" for e in r[curve])
            print(f"{r['scan']:<22}{r['nd_wgm_clean']:>7.3f}  {curve:<6}  {calls}", flush=True)
    same = sum(a["call"] == b["call"] for r in results for a, b in zip(r["gamma"], r["power"]))
    total = sum(len(r["gamma"]) for r in results)
    print(f"same call from both curves at about the same drop: {same}/{total}; "
          f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
