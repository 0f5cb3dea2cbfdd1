#!/usr/bin/env python
"""How far do the intensities alone go? An independent observer beside the shipped networks, on
the very same held-out images.

    python benchmarks/bench_intensity_observer.py --cache-dir CACHE [--model-dir DIR (default: the shipped model)]
        [--data ../shared/data] [--seeds 12345,9,11,13] [--json out.json]

A gamma (the contrast artefact) only changes how the intensities are distributed, so a classifier
of the intensity distribution is a natural reference for the contrast detectors. This fits a
logistic regression (scikit-learn, balanced classes) per detector on 36 intensity features of the
network input - percentiles inside the template brain, of the whole box and of a ring around the
brain; white- and grey-matter medians, their ratio and spreads - of simulated images of every
subject the model was not tested on (the training cache: ``bids-qc-train``'s simulation and
images), then scores it beside the networks on ``bench_heldout.py``'s held-out draws (same seeds,
same images). It prints, per detector, the AUC of the network, of the observer and of their mean;
for moderate contrast, the observer's held-out AUC when fitted on fewer subjects (if it stops
rising, more subjects of the same kind would not help it either) and both models' errors by
held-out subject. Needs scikit-learn (``pip install scikit-learn``); the cache is built when absent
(about 10 minutes for the IXI subset), as ``bids-qc-calibrate`` does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.evaluation.intensity_observer import (  # noqa: E402
    IntensityFeatures,
    compare,
    detector_labels,
    heldout_rows,
    learning_curve,
    training_rows,
)
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.record import DETECTORS  # noqa: E402
from bids_qc.training.cache import build_cache, cache_settings  # noqa: E402

CURVE_DETECTOR = "contrast_moderate"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BIDS_QC_DATA", ROOT / "../shared/data")))
    ap.add_argument("--cache-dir", type=Path, required=True, help="the training cache (built when absent)")
    ap.add_argument("--seeds", default="12345,9,11,13", help="bench_heldout seeds of the held-out draws")
    ap.add_argument("--samples-per-subject", type=int, default=12, help="held-out images per subject per draw")
    ap.add_argument("--train-samples-per-subject", type=int, default=16)
    ap.add_argument("--subject-counts", default="24,48,72,1000", help="learning curve (1000: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("bench_intensity_observer needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = load_bundle(args.model_dir)
    grid, schemes = bundle.grid, bundle.manifest["detectors"]
    seeds = [int(s) for s in args.seeds.split(",")]
    tested = set(bundle.manifest["training"]["test_subjects"])
    n_variants, timing = cache_settings(bundle.manifest)
    entries = [e.load() for e in build_cache(args.data / "ixi", args.cache_dir, grid, n_variants, 0,
                                             motion_timing=timing) if e.subject not in tested]
    features = IntensityFeatures(grid)
    train = training_rows(entries, grid, args.train_samples_per_subject, 777, features)
    test = heldout_rows(bundle, args.data, seeds, args.samples_per_subject, features)
    out = {"model_id": bundle.model_id, "seeds": seeds, "n_train_subjects": len(entries),
           "n_train_images": len(train[0]), "n_test_images": len(test["seed"]), "detectors": {}}
    print(f"\nIntensity observer vs {bundle.model_id}: fitted on {len(train[0])} simulated images of "
          f"{len(entries)} subjects; held-out draws {seeds} ({len(test['seed'])} images of "
          f"{len(tested)} subjects). AUC, then balanced accuracy % (network at its threshold, "
          f"observer at its training Youden point)\n")
    print(f"{'detector':<20}{'network':>9}{'observer':>10}{'mean':>7}{'net b.acc':>11}{'obs b.acc':>11}"
          f"   AUC by draw (network/observer)")
    for det in DETECTORS:
        r = out["detectors"][det] = compare(det, schemes, train, test, seeds, bundle.thresholds[det])
        draws = " ".join(f"{v['network']:.3f}/{v['observer']:.3f}" for v in r["by_seed"].values())
        print(f"{det:<20}{r['network_auc']:>9.3f}{r['observer_auc']:>10.3f}{r['mean_auc']:>7.3f}"
              f"{100 * r['network_balanced_accuracy']:>11.1f}{100 * r['observer_balanced_accuracy']:>11.1f}"
              f"   {draws}")
        if det == CURVE_DETECTOR:
            y_train, y = detector_labels(det, train[1], schemes), detector_labels(det, test["grades"], schemes)
            keep, k = y_train >= 0, y >= 0
            counts = [int(c) for c in args.subject_counts.split(",")]
            curve = learning_curve(train[0][keep], y_train[keep], train[2][keep], test["features"][k], y[k], counts)
            out["learning_curve"] = {str(n): v for n, v in curve.items()}
            curve_text = ", ".join(f"{n}: {m:.3f} +- {s:.3f}" for n, (m, s) in curve.items())
    print(f"\n{CURVE_DETECTOR}: observer's held-out AUC by number of training subjects: {curve_text}")
    cm = out["detectors"][CURVE_DETECTOR]
    for who in ("network", "observer"):
        errors = cm[f"{who}_errors_by_subject"]
        print(f"{CURVE_DETECTOR} errors of the {who}: {errors['total']}, most in "
              + ", ".join(f"{s} ({n})" for s, n in errors["top"]))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {out['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
