"""An intensity observer: a logistic regression on 36 intensity features of the network input,
fitted on simulated training images and scored beside the networks on the held-out draws
(``benchmarks/bench_intensity_observer.py``; needs scikit-learn)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from bids_qc.evaluation import subject_errors
from bids_qc.evaluation.detector_probabilities import predict
from bids_qc.grading import binary_labels
from bids_qc.masks import priors_on_grid
from bids_qc.preprocessing import ModelGrid, preprocess
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.training.calibration import youden_threshold
from bids_qc.training.data import SimulatedSet, simulated_draws
from bids_qc.training.metrics import auc, binary_scores
from bids_qc.verdict import positive

BRAIN_PERCENTILES = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 98, 99)
BOX_PERCENTILES = (5, 10, 25, 50, 75, 90, 95)
RING_PERCENTILES = (10, 25, 50, 75)


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
    (counted by ``subject_errors.errors_by_subject``)."""
    names, codes = np.unique(np.asarray(subjects), return_inverse=True)
    counts = subject_errors.errors_by_subject(np.asarray(labels), np.asarray(called), codes, names)
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
                probs = predict(bundle, x)
                out["features"].append(features(x))
                out["grades"].append([grades[a] for a in ARTEFACTS])
                out["probs"].append([probs[d] for d in DETECTORS])
                out["subject"].append(sub)
                out["seed"].append(seed)
        print(f"held-out draw {seed}: {len(out['seed'])} images", file=sys.stderr)
    return {k: np.array(v) for k, v in out.items()}


def detector_labels(detector: str, grades: np.ndarray, schemes: dict) -> np.ndarray:
    """Binary labels of one detector (-1: not used) from grade rows (n, 3) in ``ARTEFACTS`` order."""
    return binary_labels(detector, grades[:, ARTEFACTS.index(detector.split("_")[0])], schemes)


def compare(detector, schemes, train, test, seeds, threshold: float) -> dict:
    """The observer fitted on the training rows beside the network on the held-out rows; the
    network calls a scan positive at ``threshold`` (its calibrated one)."""
    y_train = detector_labels(detector, train[1], schemes)
    keep = y_train >= 0
    model = fit_observer(train[0][keep], y_train[keep])
    threshold = youden_threshold(y_train[keep], model.predict_proba(train[0][keep])[:, 1], bounds=(0.0, 1.0))
    y = detector_labels(detector, test["grades"], schemes)
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
