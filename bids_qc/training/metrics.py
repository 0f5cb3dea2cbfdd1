"""Classification figures: balanced accuracy, sensitivity, specificity (pure numpy)."""
from __future__ import annotations

import numpy as np


def binary_scores(labels, predictions) -> dict:
    labels, predictions = np.asarray(labels, int), np.asarray(predictions, int)
    pos, neg = labels == 1, labels == 0
    sens = float((predictions[pos] == 1).mean()) if pos.any() else float("nan")
    spec = float((predictions[neg] == 0).mean()) if neg.any() else float("nan")
    return {"balanced_accuracy": float(np.nanmean([sens, spec])), "sensitivity": sens,
            "specificity": spec, "n_positive": int(pos.sum()), "n_negative": int(neg.sum())}


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
