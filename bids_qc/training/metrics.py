"""Classification figures: balanced accuracy, sensitivity, specificity (numpy, see
:func:`binary_scores`) and the area under the ROC curve (scikit-learn)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def binary_scores(labels, predictions) -> dict:
    """Balanced accuracy, sensitivity and specificity of 0/1 ``predictions`` against 0/1
    ``labels`` (other labels, e.g. -1 for "not shown", do not count). With one class absent its
    rate is NaN and the balanced accuracy is the other's.

    Plain numpy on purpose, and O(n): threshold calibration calls this thousands of times
    (coordinate ascent over six thresholds), and scikit-learn's ``balanced_accuracy_score`` costs
    about 0.8 ms a call against 10 us here (600 labels; with two ``recall_score`` calls 3.1 ms),
    which made the calibration tests 60 times slower (0.6 s -> 34 s). tests/test_classification_metrics.py
    checks that the figures equal scikit-learn's.
    """
    labels, predictions = np.asarray(labels, int), np.asarray(predictions, int)
    pos, neg = labels == 1, labels == 0
    sens = float((predictions[pos] == 1).mean()) if pos.any() else float("nan")
    spec = float((predictions[neg] == 0).mean()) if neg.any() else float("nan")
    balanced = float(np.nanmean([sens, spec])) if pos.any() or neg.any() else float("nan")
    return {"balanced_accuracy": balanced, "sensitivity": sens,
            "specificity": spec, "n_positive": int(pos.sum()), "n_negative": int(neg.sum())}


def auc(labels, scores) -> float:
    """Area under the ROC curve (ties count half, as Mann-Whitney); NaN with one class absent."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    keep = (labels == 0) | (labels == 1)
    labels, scores = labels[keep], scores[keep]
    if not (labels == 1).any() or not (labels == 0).any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


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
