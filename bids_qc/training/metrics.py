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


def subject_bootstrap_ci(statistic, subjects, n_resamples: int = 2000, confidence: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic(rows)`` when whole subjects are resampled with
    replacement (images of one subject are not independent). ``subjects`` gives each row's
    subject; ``statistic`` takes an index array into the rows and returns a float."""
    from scipy.stats import bootstrap

    subjects = np.asarray(subjects)
    rows_of = [np.flatnonzero(subjects == s) for s in np.unique(subjects)]

    def on_subjects(drawn):
        return statistic(np.concatenate([rows_of[int(i)] for i in drawn]))

    res = bootstrap((np.arange(len(rows_of)),), on_subjects, vectorized=False, n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
