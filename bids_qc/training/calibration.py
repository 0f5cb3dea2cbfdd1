"""Decision thresholds chosen on validation subjects (never on the held-out test subjects).

A detector trained with class weights puts its balanced-accuracy optimum near P = 0.5 on the
training distribution, but not exactly there, and the subtle detectors (moderate contrast,
moderate vs severe motion) drift most. Each threshold is the point of the ROC curve of the
validation images that maximises Youden's J = sensitivity + specificity - 1 (= 2 x balanced
accuracy - 1), the midpoint between the two neighbouring validation probabilities, kept within
[0.05, 0.95]; ties go to the threshold nearest 0.5.

Youden serves each detector alone, but the verdict a user acts on is the tier, and a scan is tier 1
only if all six detectors stay silent. A detector that is right on average can still fire on many
clean scans (moderate contrast fires on about a fifth of clean validation scans at its Youden point,
against a tenth of contrast-clean scans carrying other artefacts, which are tier 2 or 3 anyway).
``objective="tiers"`` therefore starts from the Youden points and moves one threshold at a time
(coordinate ascent on a 0.01 grid within the same bounds, ties to the Youden point) to maximise, on
the same pooled validation images, the mean of the two tier balanced accuracies (1+2 vs 3, 1 vs 2)
plus the mean of the six detector balanced accuracies: the verdict and its explanation count equally.
``keep_youden`` names detectors that stay at their Youden points while the others move (a detector
whose own accuracy the tier objective would trade away, e.g. severe noise).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve
from torch.utils.data import DataLoader

from bids_qc.grading import LABEL_SCHEMES, binary_labels, grades_of, tiers_of
from bids_qc.record import ARTEFACTS, check_detector_names
from bids_qc.training.evaluate import tier_scores
from bids_qc.training.loop import evaluate
from bids_qc.training.metrics import binary_scores

BOUNDS = (0.05, 0.95)
GRID = np.round(np.arange(BOUNDS[0], BOUNDS[1] + 1e-9, 0.01), 2)
METHODS = {
    "youden": "Youden J on the pooled validation images of the trained folds",
    "tiers": "from the Youden points on the pooled validation images of the trained folds, one "
             "threshold at a time (0.01 grid) to maximise the mean tier balanced accuracy (1+2 vs 3, "
             "1 vs 2) plus the mean detector balanced accuracy",
}


def youden_threshold(labels, probabilities, bounds=BOUNDS) -> float:
    """Threshold on ``probabilities`` maximising sensitivity + specificity (0.5 if one class is
    absent), within ``bounds``; among equal ones, the closest to 0.5."""
    labels = np.asarray(labels, int)
    p = np.asarray(probabilities, float)
    if not (labels == 1).any() or not (labels == 0).any():
        return 0.5
    # candidates: midpoints between all distinct probabilities (also of unlabelled scans)
    values = np.unique(p)
    # scikit-learn's ROC of the labelled ones: one point per distinct probability t (positive
    # means p >= t), decreasing t, tpr = sensitivity and 1 - fpr = specificity at each
    keep = (labels == 0) | (labels == 1)
    fpr, tpr, roc_t = roc_curve(labels[keep], p[keep], drop_intermediate=False)
    candidates = np.concatenate([[0.5], (values[:-1] + values[1:]) / 2])
    candidates = np.clip(candidates, *bounds)
    # a candidate c calls positive the same scans as the lowest ROC threshold >= c
    point = np.searchsorted(-roc_t, -candidates, side="right") - 1
    j = tpr[point] + (1.0 - fpr[point])
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def detector_labels(grades: np.ndarray, schemes) -> dict:
    """``{detector: binary labels (-1 = not shown)}`` for a (n, 3) array of true grades."""
    return {d: binary_labels(d, grades[:, ARTEFACTS.index(d.split("_")[0])].tolist(), schemes)
            for d in schemes}


def _balanced_accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    keep = labels >= 0
    return binary_scores(labels[keep], probs[keep] >= threshold)["balanced_accuracy"]


def tier_objective(grades: np.ndarray, probs: dict, thresholds: dict, labels: dict) -> float:
    """Mean of the two tier balanced accuracies plus the mean detector balanced accuracy, on
    images with true ``grades`` (n, 3) and per-detector ``probs``; ``labels`` from the grades."""
    tiers = tier_scores(tiers_of(grades), tiers_of(grades_of(probs, thresholds)))
    verdict = np.mean([s["balanced_accuracy"] for s in tiers.values()])
    detectors = np.mean([_balanced_accuracy(labels[d], probs[d], thresholds[d]) for d in probs])
    return float(verdict + detectors)


def tier_thresholds(grades: np.ndarray, probs: dict, start: dict, schemes=LABEL_SCHEMES,
                    rounds: int = 5, fixed=()) -> dict:
    """Coordinate ascent of ``tier_objective`` over ``GRID`` from ``start`` (detector ->
    threshold); each step keeps the best threshold of one detector, ties to its start value.
    Detectors in ``fixed`` keep their start value."""
    labels = detector_labels(grades, schemes)
    thresholds = dict(start)
    for _ in range(rounds):
        moved = False
        for det in (d for d in probs if d not in fixed):
            def key(t, det=det):
                return (round(tier_objective(grades, probs, {**thresholds, det: t}, labels), 9),
                        -abs(t - start[det]))
            best = max([thresholds[det], *GRID], key=key)
            if key(best) > key(thresholds[det]):
                thresholds[det], moved = float(best), True
        if not moved:
            break
    return thresholds


def calibrate_thresholds(members_and_sets, schemes=LABEL_SCHEMES, batch_size: int = 6,
                         objective: str = "youden", keep_youden=()) -> dict:
    """Thresholds per detector from pooled validation predictions (``objective``: a key of
    ``METHODS``; ``"tiers"`` needs all six detectors; ``keep_youden``: detectors that ``"tiers"``
    leaves at their Youden points).

    ``members_and_sets``: ``[(nets, val_set), ...]``, one per cross-validation fold, where
    ``nets`` maps detector -> network trained on that fold and ``val_set`` is the fold's
    validation dataset. Returns ``{detector: {"threshold", "val_balanced_accuracy_at_0.5",
    "val_balanced_accuracy", "n_images"}}``, plus ``"youden_threshold"`` for ``"tiers"``.
    """
    if objective not in METHODS:
        raise ValueError(f"unknown calibration objective {objective!r}; choose from {sorted(METHODS)}")
    if objective == "tiers" and not set(schemes) <= {d for nets, _ in members_and_sets for d in nets}:
        raise ValueError("objective 'tiers' needs all six detectors")
    check_keep_youden(keep_youden, objective, schemes)
    pooled_probs: dict[str, list] = {}
    pooled_grades = []
    for nets, val_set in members_and_sets:
        _, probs, grades = evaluate(nets, DataLoader(val_set, batch_size=batch_size), schemes)
        pooled_grades.append(grades)
        for det, p in probs.items():
            pooled_probs.setdefault(det, []).append(p)
    grades = np.concatenate(pooled_grades)
    probs = {d: np.concatenate(p) for d, p in pooled_probs.items()}
    labels = detector_labels(grades, {d: schemes[d] for d in probs})
    youden = {d: youden_threshold(labels[d][labels[d] >= 0], probs[d][labels[d] >= 0]) for d in probs}
    chosen = (tier_thresholds(grades, probs, youden, schemes, fixed=tuple(keep_youden))
              if objective == "tiers" else youden)
    out = {}
    for det in probs:
        out[det] = {"threshold": round(chosen[det], 4),
                    "val_balanced_accuracy_at_0.5": _balanced_accuracy(labels[det], probs[det], 0.5),
                    "val_balanced_accuracy": _balanced_accuracy(labels[det], probs[det], chosen[det]),
                    "n_images": int((labels[det] >= 0).sum())}
        if objective == "tiers":
            out[det]["youden_threshold"] = round(youden[det], 4)
    return out


def check_keep_youden(keep_youden, objective: str, schemes=LABEL_SCHEMES) -> None:
    """``keep_youden`` only means something with ``objective="tiers"`` and must name detectors."""
    if not keep_youden:
        return
    if objective != "tiers":
        raise ValueError("keep_youden needs objective 'tiers' (with 'youden' every detector is at its Youden point)")
    try:
        check_detector_names(keep_youden, schemes)
    except ValueError as err:
        raise ValueError(f"keep_youden: {err}") from err
