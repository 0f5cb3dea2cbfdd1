"""Which scans a human should rate first: the information a rating would give.

Used after group fine-tuning (:mod:`bids_qc.training.finetune_group`) to fill ``review_bits``,
``review_rank`` and ``needs_review``. The rule:

1. Each detector's probability ``p`` is read against its own calibrated threshold ``t``:
   ``q = sigmoid(logit(p) - logit(t))``, so ``q = 0.5`` exactly at the threshold and ``q``
   moves towards 0 or 1 as ``p`` moves away from it on either side.
2. The binary entropy ``H(q)`` (bits: 1 at the threshold, near 0 far from it) is what a
   human rating would tell about that detector's decision. A scan's ``review_bits`` is the sum
   over the six detectors (0 to 6 bits).
3. Scans are ranked by decreasing ``review_bits`` (``review_rank`` 1 = rate first; ties by
   name). ``needs_review`` flags the first ``REVIEW_FRACTION`` of the ranked scans (at least
   one), and only those with at least ``MIN_BITS``: a queue where every scan is flagged orders
   nothing, and a scan far from every threshold needs no look.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

REVIEW_FRACTION = 0.2  # share of the scored scans flagged "needs review"
MIN_BITS = 0.5         # a scan below this total is never flagged (every detector is clear)
_EPS = 1e-6


def _logit(x: float) -> float:
    x = min(max(float(x), _EPS), 1 - _EPS)
    return math.log(x / (1 - x))


def decision_entropy(p: float, threshold: float) -> float:
    """Bits of uncertainty of one detector's decision: ``H(sigmoid(logit(p) - logit(t)))``."""
    q = 1.0 / (1.0 + math.exp(-(_logit(p) - _logit(threshold))))
    q = min(max(q, _EPS), 1 - _EPS)
    return float(-(q * math.log2(q) + (1 - q) * math.log2(1 - q)))


def review_bits(probs: dict, thresholds: dict) -> float | None:
    """Sum of :func:`decision_entropy` over the detectors of ``probs`` (None probabilities
    skipped); None when no probability is given."""
    bits = [decision_entropy(p, thresholds[d]) for d, p in probs.items() if p is not None]
    return round(float(np.sum(bits)), 4) if bits else None


def review_queue(names, bits, fraction: float = REVIEW_FRACTION,
                 min_bits: float = MIN_BITS) -> pd.DataFrame:
    """``review_bits``, ``review_rank`` and ``needs_review`` for scans ``names`` with scores
    ``bits`` (None: not scored, no rank, not flagged), in the order given."""
    frame = pd.DataFrame({"name": list(names), "review_bits": pd.array(list(bits), dtype="Float64")})
    scored = frame.dropna(subset=["review_bits"]).sort_values(["review_bits", "name"],
                                                             ascending=[False, True], kind="stable")
    rank = pd.Series(range(1, len(scored) + 1), index=scored.index)
    frame["review_rank"] = pd.array(rank.reindex(frame.index), dtype="Int64")
    n_flag = max(1, math.ceil(fraction * len(scored))) if len(scored) else 0
    flagged = (frame["review_rank"] <= n_flag) & (frame["review_bits"] >= min_bits)
    frame["needs_review"] = flagged.astype("boolean").mask(frame["review_bits"].isna())
    return frame.drop(columns="name")
