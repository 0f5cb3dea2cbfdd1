"""When should a human look? Uncertainty from the ensemble spread and the distance to thresholds."""
from __future__ import annotations

MARGIN = 0.15  # |p - threshold| below this is "near the threshold"
SPREAD = 0.15  # ensemble standard deviation above this is "the folds disagree"


def review_flags(probs: dict, stds: dict | None, thresholds: dict) -> tuple[float, bool]:
    """``(uncertainty, needs_review)`` for one scan.

    uncertainty = max over detectors of max(std, MARGIN - |p - threshold|) clipped at 0: 0 when
    every detector is far from its threshold and the members agree. needs_review is True when
    any detector is within MARGIN of its threshold or its members' std exceeds SPREAD.
    """
    stds = stds or {}
    scores, flag = [], False
    for det, p in probs.items():
        if p is None:
            continue
        margin = abs(float(p) - thresholds.get(det, 0.5))
        spread = float(stds.get(det, 0.0) or 0.0)
        scores.append(max(spread, MARGIN - margin, 0.0))
        flag = flag or margin < MARGIN or spread > SPREAD
    return (round(max(scores), 4) if scores else 0.0), flag
