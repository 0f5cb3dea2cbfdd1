"""How uncertain a verdict is, and which scans a human should rate first: the information a
rating would give. The one definition of ``uncertainty`` and ``needs_review``: the verdict of
every scan (:mod:`bids_qc.verdict`, participant level), group fine-tuning's re-scoring
(:mod:`bids_qc.training.finetune_group`) and the group report all read them from here.

1. Each detector's probability ``p`` is read against its own calibrated threshold ``t``:
   ``q = sigmoid(logit(p) - logit(t))``, so ``q = 0.5`` exactly at the threshold and ``q``
   moves towards 0 or 1 as ``p`` moves away from it on either side.
2. The binary entropy ``H(q)`` (bits: 1 at the threshold, near 0 far from it) is what a
   human rating would tell about that detector's decision. A scan's ``uncertainty`` is the sum
   over the six detectors (0 to 6 bits), from the members' mean probability for an ensemble
   (their spread is recorded as ``probability_std``; it moves the mean towards the threshold
   when the members disagree on the side).
3. One scan: ``needs_review`` when its uncertainty reaches ``REVIEW_BITS`` (0.9 bit: one detector
   within about 0.15 of a 0.5 threshold, or several less clear ones together).
4. A group (after fine-tuning): scans are ranked by decreasing uncertainty (``review_rank``
   1 = rate first; ties by name), and ``needs_review`` keeps the same cut but at most the first
   ``REVIEW_FRACTION`` of the ranked scans (at least one): a queue where every scan is flagged
   orders nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

REVIEW_FRACTION = 0.2  # share of the scored scans flagged "needs review"
REVIEW_BITS = 0.9      # a scan's uncertainty from which it needs a human look
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


def scan_review(probs: dict, thresholds: dict) -> tuple[float, bool]:
    """``(uncertainty, needs_review)`` of one scan (rule 3); ``(0.0, False)`` without probabilities."""
    bits = review_bits(probs, thresholds)
    return (0.0, False) if bits is None else (bits, bits >= REVIEW_BITS)


def review_queue(names, bits, fraction: float = REVIEW_FRACTION,
                 min_bits: float = REVIEW_BITS) -> pd.DataFrame:
    """``review_rank`` and ``needs_review`` (rule 4) for scans ``names`` with uncertainties
    ``bits`` (None: not scored, no rank, not flagged), in the order given."""
    frame = pd.DataFrame({"name": list(names), "review_bits": pd.array(list(bits), dtype="Float64")})
    scored = frame.dropna(subset=["review_bits"]).sort_values(["review_bits", "name"],
                                                             ascending=[False, True], kind="stable")
    rank = pd.Series(range(1, len(scored) + 1), index=scored.index)
    frame["review_rank"] = pd.array(rank.reindex(frame.index), dtype="Int64")
    n_flag = max(1, math.ceil(fraction * len(scored))) if len(scored) else 0
    flagged = (frame["review_rank"] <= n_flag) & (frame["review_bits"] >= min_bits)
    frame["needs_review"] = flagged.astype("boolean").mask(frame["review_bits"].isna())
    return frame.drop(columns=["name", "review_bits"])
