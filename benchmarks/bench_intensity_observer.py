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

import numpy as np
import torch
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_heldout  # noqa: E402

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.grading import binary_labels  # noqa: E402
from bids_qc.masks import priors_on_grid  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.preprocessing import ModelGrid, preprocess  # noqa: E402
from bids_qc.record import ARTEFACTS, DETECTORS  # noqa: E402
from bids_qc.training.cache import build_cache, cache_settings  # noqa: E402
from bids_qc.training.calibration import youden_threshold  # noqa: E402
from bids_qc.training.data import SimulatedSet, simulated_draws  # noqa: E402
from bids_qc.training.metrics import auc, binary_scores  # noqa: E402
from bids_qc.verdict import positive  # noqa: E402

BRAIN_PERCENTILES = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 98, 99)
BOX_PERCENTILES = (5, 10, 25, 50, 75, 90, 95)
RING_PERCENTILES = (10, 25, 50, 75)
CURVE_DETECTOR = "contrast_moderate"


class IntensityFeatures:
    """36 numbers describing the intensity distribution of a model-grid image."""

    def __init__(self, grid: ModelGrid):
        gm, wm = priors_on_grid(grid.affine, grid.shape)
        self.brain = (gm + wm) > 0.5
        self.wm, self.gm = wm > 0.9, gm > 0.6
        self.ring = ndi.binary_dilation(self.brain, iterations=3) & ~self.brain

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32)
        wm, gm = float(np.median(x[self.wm])), float(np.median(x[self.gm]))
        return np.concatenate([
            np.percentile(x[self.brain], BRAIN_PERCENTILES), np.percentile(x, BOX_PERCENTILES),
            np.percentile(x[self.ring], RING_PERCENTILES),
            [wm, gm, gm / max(wm, 1e-6), (wm - gm) / max(wm + gm, 1e-6), x[self.wm].std(), x[self.gm].std()]])


def fit_observer(features: np.ndarray, labels: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    return model.fit(features, labels)


def learning_curve(features, labels, subjects, test_features, test_labels, counts, repeats: int = 5,
                   seed: int = 0) -> dict:
    """{n subjects: (mean, sd) of the held-out AUC of observers fitted on ``repeats`` random subsets
    of n training subjects} (one fit when n is all of them)."""
    rng = np.random.default_rng(seed)
    pool = sorted(set(subjects))
    curve = {}
    for n in counts:
        n = min(n, len(pool))
        aucs = []
        for _ in range(repeats if n < len(pool) else 1):
            keep = np.isin(subjects, rng.choice(pool, n, replace=False))
            model = fit_observer(features[keep], labels[keep])
            aucs.append(auc(test_labels, model.predict_proba(test_features)[:, 1]))
        curve[n] = (float(np.mean(aucs)), float(np.std(aucs)))
    return curve


def errors_by_subject(labels, called, subjects, top: int = 5) -> dict:
    """{"total": errors, "top": [(subject, errors), ...] for the ``top`` subjects with most}
    (counted by ``bench_heldout.errors_by_subject``)."""
    names, codes = np.unique(np.asarray(subjects), return_inverse=True)
    counts = bench_heldout.errors_by_subject(np.asarray(labels), np.asarray(called), codes, names)
    worst = sorted(((str(s), w) for s, (w, _) in counts.items() if w), key=lambda sw: -sw[1])
    return {"total": sum(w for w, _ in counts.values()), "top": worst[:top]}


def training_rows(entries, grid, n_per_subject: int, seed: int, features: IntensityFeatures):
    """Features, grades (n, 3) and subjects of the observer's simulated training images."""
    images = SimulatedSet(entries, n_per_subject, seed=seed, grid=grid)
    rows, grades, subjects = [], [], []
    for index in range(len(images)):
        x, g = images[index]
        rows.append(features(x[0].numpy()))
        grades.append(g.numpy())
        subjects.append(images.entries[index % len(images.entries)].subject)
    return np.array(rows), np.array(grades), np.array(subjects)


def heldout_rows(bundle, data: Path, seeds, n_per_subject: int, features: IntensityFeatures):
    """bench_heldout's images of every seed: features, grades, network probabilities, subject, seed."""
    grid, subjects = bundle.grid, bundle.manifest["training"]["test_subjects"]
    scans = {s: preprocess(data / "ixi" / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz", grid=grid,
                           with_registered=False).scaled for s in subjects}
    out = {k: [] for k in ("features", "grades", "probs", "subject", "seed")}
    for seed in seeds:
        for i, sub in enumerate(subjects):
            for grades, image in simulated_draws(scans[sub], grid.affine, np.random.default_rng([seed, i]),
                                                 n_per_subject):
                x = grid.normalise(image)
                probs = bench_heldout.predict(bundle, x)
                out["features"].append(features(x))
                out["grades"].append([grades[a] for a in ARTEFACTS])
                out["probs"].append([probs[d] for d in DETECTORS])
                out["subject"].append(sub)
                out["seed"].append(seed)
        print(f"held-out draw {seed}: {len(out['seed'])} images", file=sys.stderr)
    return {k: np.array(v) for k, v in out.items()}


def _labels(detector: str, grades: np.ndarray, schemes: dict) -> np.ndarray:
    return binary_labels(detector, grades[:, ARTEFACTS.index(detector.split("_")[0])], schemes)


def compare(detector, schemes, train, test, seeds, threshold: float) -> dict:
    """The observer fitted on the training rows beside the network on the held-out rows; the
    network calls a scan positive at ``threshold`` (its calibrated one)."""
    y_train = _labels(detector, train[1], schemes)
    keep = y_train >= 0
    model = fit_observer(train[0][keep], y_train[keep])
    threshold = youden_threshold(y_train[keep], model.predict_proba(train[0][keep])[:, 1], bounds=(0.0, 1.0))
    y = _labels(detector, test["grades"], schemes)
    k = y >= 0
    net = test["probs"][k, DETECTORS.index(detector)]
    obs = model.predict_proba(test["features"][k])[:, 1]
    draw = test["seed"][k]
    by_seed = {int(s): {"network": auc(y[k][draw == s], net[draw == s]),
                        "observer": auc(y[k][draw == s], obs[draw == s])} for s in seeds}
    net_called = positive(net, threshold)  # the network at its calibrated threshold
    return {"n": int(k.sum()), "network_auc": auc(y[k], net), "observer_auc": auc(y[k], obs),
            "mean_auc": auc(y[k], (net + obs) / 2), "by_seed": by_seed,
            "network_balanced_accuracy": binary_scores(y[k], net_called)["balanced_accuracy"],
            "observer_threshold": threshold,
            "observer_balanced_accuracy": binary_scores(y[k], obs >= threshold)["balanced_accuracy"],
            "network_errors_by_subject": errors_by_subject(y[k], net_called, test["subject"][k]),
            "observer_errors_by_subject": errors_by_subject(y[k], obs >= threshold, test["subject"][k])}


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
            y_train, y = _labels(det, train[1], schemes), _labels(det, test["grades"], schemes)
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
