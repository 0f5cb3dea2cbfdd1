"""scikit-learn gives the same AUC and Youden threshold as the hand-written O(n^2) code it replaced
(kept here as the oracle), and the numpy balanced accuracy, sensitivity and specificity (kept for
speed, see bids_qc.training.metrics.binary_scores) equal scikit-learn's."""
import numpy as np
import pytest

from bids_qc.training.calibration import youden_threshold
from bids_qc.training.metrics import auc, binary_scores


def old_binary_scores(labels, predictions) -> dict:
    labels, predictions = np.asarray(labels, int), np.asarray(predictions, int)
    pos, neg = labels == 1, labels == 0
    sens = float((predictions[pos] == 1).mean()) if pos.any() else float("nan")
    spec = float((predictions[neg] == 0).mean()) if neg.any() else float("nan")
    with _quiet():  # nanmean of two NaNs warns
        balanced = float(np.nanmean([sens, spec]))
    return {"balanced_accuracy": balanced, "sensitivity": sens,
            "specificity": spec, "n_positive": int(pos.sum()), "n_negative": int(neg.sum())}


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def old_auc(labels, scores) -> float:
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def old_youden(labels, probabilities, bounds=(0.05, 0.95)) -> float:
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


def same(a, b) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def cases(n_cases=300, seed=0):
    """Random label/score sets: sizes 1..200, class balance from none to all, shifted scores,
    rounded scores (many ties), scores at 0 and 1, a -1 label (not shown) now and then."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        n = int(rng.integers(1, 200))
        labels = (rng.random(n) < rng.choice([0.0, 0.05, 0.3, 0.5, 0.9, 1.0])).astype(int)
        scores = np.clip(rng.normal(0.35 + 0.3 * labels * rng.random(), 0.25), 0, 1)
        if i % 3 == 0:
            scores = np.round(scores, 1)
        if i % 7 == 0:
            labels[rng.random(n) < 0.1] = -1
        yield labels, scores


def test_binary_scores_match_the_old_implementation_and_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, recall_score

    for labels, scores in cases():
        for t in (0.05, 0.3, 0.5, 0.77):
            called = scores >= t
            new, old = binary_scores(labels, called), old_binary_scores(labels, called)
            assert new.keys() == old.keys()
            for key in old:
                assert same(new[key], old[key]), (key, new, old)
            shown = labels >= 0
            y, c = labels[shown], called[shown].astype(int)
            if (y == 1).any() and (y == 0).any():
                assert same(new["balanced_accuracy"], balanced_accuracy_score(y, c))
                assert same(new["sensitivity"], recall_score(y, c, pos_label=1))
                assert same(new["specificity"], recall_score(y, c, pos_label=0))


def test_auc_matches_the_old_implementation():
    for labels, scores in cases(seed=1):
        assert same(auc(labels, scores), old_auc(labels, scores))


def test_youden_threshold_matches_the_old_implementation():
    for labels, scores in cases(seed=2):
        for bounds in ((0.05, 0.95), (0.0, 1.0), (0.3, 0.6)):
            assert youden_threshold(labels, scores, bounds) == old_youden(labels, scores, bounds)


def test_edge_cases():
    assert np.isnan(auc([1, 1], [0.2, 0.3])) and np.isnan(auc([], []))
    assert auc([0, 1], [0.5, 0.5]) == 0.5 and auc([0, 1], [0.1, 0.9]) == 1.0
    s = binary_scores([1, 1, 1], [1, 0, 1])
    assert s["sensitivity"] == pytest.approx(2 / 3) and np.isnan(s["specificity"])
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(binary_scores([], [])["balanced_accuracy"])
