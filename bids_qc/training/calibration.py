"""Decision thresholds chosen on validation subjects (never on the held-out test subjects).

A detector trained with class weights puts its balanced-accuracy optimum near P = 0.5 on the
training distribution, but not exactly there, and the subtle detectors (moderate contrast,
moderate vs severe motion) drift most. Each threshold is the point of the ROC curve of the
validation images that maximises Youden's J = sensitivity + specificity - 1 (= 2 x balanced
accuracy - 1), the midpoint between the two neighbouring validation probabilities, kept within
[0.05, 0.95]; ties go to the threshold nearest 0.5.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader

from bids_qc.grading import LABEL_SCHEMES, binary_labels
from bids_qc.record import ARTEFACTS
from bids_qc.training.loop import evaluate
from bids_qc.training.metrics import binary_scores

BOUNDS = (0.05, 0.95)


def youden_threshold(labels, probabilities, bounds=BOUNDS) -> float:
    """Threshold on ``probabilities`` maximising sensitivity + specificity (0.5 if one class is
    absent), within ``bounds``; among equal ones, the closest to 0.5."""
    labels = np.asarray(labels, int)
    p = np.asarray(probabilities, float)
    pos, neg = p[labels == 1], p[labels == 0]
    if not len(pos) or not len(neg):
        return 0.5
    values = np.unique(p)
    candidates = np.concatenate([[0.5], (values[:-1] + values[1:]) / 2])
    candidates = np.clip(candidates, *bounds)
    j = (pos[None, :] >= candidates[:, None]).mean(1) + (neg[None, :] < candidates[:, None]).mean(1)
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def calibrate_thresholds(members_and_sets, schemes=LABEL_SCHEMES, batch_size: int = 6) -> dict:
    """Youden thresholds per detector from pooled validation predictions.

    ``members_and_sets``: ``[(nets, val_set), ...]``, one per cross-validation fold, where
    ``nets`` maps detector -> network trained on that fold and ``val_set`` is the fold's
    validation dataset. Returns ``{detector: {"threshold", "val_balanced_accuracy_at_0.5",
    "val_balanced_accuracy", "n_images"}}``.
    """
    pooled: dict[str, tuple[list, list]] = {}
    for nets, val_set in members_and_sets:
        _, probs, grades = evaluate(nets, DataLoader(val_set, batch_size=batch_size), schemes)
        for det, p in probs.items():
            col = ARTEFACTS.index(det.split("_")[0])
            labels = binary_labels(det, grades[:, col].tolist(), schemes)
            keep = labels >= 0
            pooled.setdefault(det, ([], []))[0].extend(labels[keep].tolist())
            pooled[det][1].extend(p[keep].tolist())
    out = {}
    for det, (labels, probs) in pooled.items():
        labels, probs = np.array(labels), np.array(probs)
        threshold = youden_threshold(labels, probs)
        out[det] = {"threshold": round(threshold, 4),
                    "val_balanced_accuracy_at_0.5": binary_scores(labels, probs >= 0.5)["balanced_accuracy"],
                    "val_balanced_accuracy": binary_scores(labels, probs >= threshold)["balanced_accuracy"],
                    "n_images": int(len(labels))}
    return out
