"""The scanner-group slab verdict evaluated by bench_slab_sites (not shipped): robust z of the
slab logit within the scan's site."""
from __future__ import annotations

import numpy as np

from bids_qc.evaluation.slab_group_verdict import MIN_GROUP, logit, relative_flags

THRESHOLD = 0.06


def _scores(centre_logit: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(centre_logit + rng.normal(0, 0.4, n))))


def test_a_site_that_scores_high_keeps_only_its_outliers():
    """Every scan of a smoother scanner is above the shipped threshold; the group verdict flags
    only the ones well above their site, and a sharp site's scans stay as the shipped verdict says."""
    smooth = np.r_[_scores(1.5, 20, 0), 1 / (1 + np.exp(-4.5))]  # 20 still + 1 clearly moving
    sharp = np.r_[_scores(-10.0, 20, 1), 1 / (1 + np.exp(-2.0))]
    scores = np.r_[smooth, sharp]
    groups = ["smooth"] * 21 + ["sharp"] * 21
    z, flag = relative_flags(scores, groups, THRESHOLD)
    shipped = scores >= THRESHOLD
    assert shipped[:20].all()  # the problem: every still scan of the smooth site flagged
    assert flag[20] is True and not any(flag[:20])
    assert flag[41] is True and not any(flag[21:41])
    assert z[20] > 3 and abs(np.median(z[:21])) < 1e-9


def test_a_high_z_below_the_shipped_threshold_is_not_motion():
    scores = np.r_[_scores(-12.0, 12, 2), 1 / (1 + np.exp(6.0))]  # outlier at logit -6 < threshold
    z, flag = relative_flags(scores, ["a"] * 13, THRESHOLD)
    assert z[-1] > 5 and flag[-1] is False


def test_small_groups_and_unscored_scans_get_no_group_verdict():
    scores = np.r_[_scores(1.0, MIN_GROUP - 1, 3), np.nan]
    z, flag = relative_flags(scores, ["a"] * MIN_GROUP, THRESHOLD)
    assert all(f is None for f in flag) and np.isnan(z).all()


def test_near_identical_scores_do_not_flag_their_top_scan():
    scores = 1 / (1 + np.exp(-(2.0 + np.linspace(0, 0.05, 10))))
    _, flag = relative_flags(scores, ["a"] * 10, THRESHOLD)
    assert not any(flag)  # the spread floor: 0.05 logits apart is not an outlier


def test_logit_is_finite_at_the_ends():
    assert np.isfinite(logit([0.0, 1.0, 0.5])).all()
