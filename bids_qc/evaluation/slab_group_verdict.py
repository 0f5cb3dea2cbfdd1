"""A candidate slab motion verdict relative to the scan's scanner group, evaluated and NOT shipped.

The slab detector ranks motion well within a scanner but its level moves between scanners: still
scans of a smoother or otherwise different scanner score above the threshold set on IXI
(``benchmarks/SHIPPING_RULE_slab_group.md``). MRIQC's classifier met the same problem with its
image-quality metrics and standardised them per site; this does it for the slab score.

Scans are grouped by site. In a group of at least ``MIN_GROUP`` scored
scans, a scan is flagged when the shipped verdict says motion *and* its score's logit lies at least
``K`` robust spreads above the group's median logit (spread = 1.4826 x MAD, at least
``MIN_SPREAD``). ``K`` = 1.28 flags 10 % of a group of clean scans whose logits are normal. A group
with mostly moving scans hides them (they set the median): the verdict is relative.

Outcome (``benchmarks/SHIPPING_RULE_slab_group.md``, fresh draw seed 2028): no still image of a
held-out site flagged, but motion found in 2 of 31 moving images there and in 38 of 54 on IXI
(shipped verdict 51 of 54), and in 0 of 6 real moving slabs: where half the scans move, a relative
verdict cannot find them. The rule is kept here for ``benchmarks/bench_slab_sites.py``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

K = 1.28
MIN_GROUP = 8
MIN_SPREAD = 0.5  # logits; a group of near-identical scores must not flag its top scan
_EPS = 1e-7


def logit(scores) -> np.ndarray:
    p = np.clip(np.asarray(scores, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def relative_z(logits, groups, min_group: int = MIN_GROUP) -> np.ndarray:
    """Robust z of each logit within its group (NaN where the score or a big enough group is
    missing)."""
    logits = np.asarray(logits, float)
    groups = np.asarray(groups, object)
    z = np.full(logits.size, np.nan)
    for g in pd.unique(groups):
        member = (groups == g) & np.isfinite(logits)
        if member.sum() < min_group:
            continue
        values = logits[member]
        centre = np.median(values)
        spread = max(1.4826 * np.median(np.abs(values - centre)), MIN_SPREAD)
        z[member] = (values - centre) / spread
    return z


def relative_flags(scores, groups, threshold, k: float = K,
                   min_group: int = MIN_GROUP) -> tuple[np.ndarray, list]:
    """``(z, flag)``; ``threshold`` is the shipped one (a number, or one per scan). A flag is
    True/False where the group is big enough and the scan scored, None elsewhere."""
    scores = np.asarray(scores, float)
    thresholds = np.broadcast_to(np.asarray(threshold, float), scores.shape)
    z = relative_z(logit(scores), groups, min_group)
    flag = [None if np.isnan(zi) or np.isnan(t) else bool(s >= t and zi >= k)
            for s, t, zi in zip(scores, thresholds, z)]
    return z, flag
