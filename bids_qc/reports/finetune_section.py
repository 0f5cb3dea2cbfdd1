"""The group report's fine-tuning section: cross-validated balanced accuracy before/after."""
from __future__ import annotations

import json

from bids_qc.reports.formatting import fmt, number_or_none, plain


def _score(value, key: str = "balanced_accuracy"):
    """A score given as a number, or as a dict of scores (``key`` picked)."""
    return number_or_none(value.get(key)) if isinstance(value, dict) else number_or_none(value)


def _before_after(before, after, key: str = "balanced_accuracy") -> dict:
    b, a = _score(before, key), _score(after, key)
    return {"before": "n/a" if b is None else f"{b:.3f}", "after": "n/a" if a is None else f"{a:.3f}",
            "change": "n/a" if a is None or b is None else f"{a - b:+.3f}",
            "better": None if a is None or b is None else a > b}


TIER_DECISIONS = {"tier_12_vs_3": "reject (tier 3) vs keep", "tier_1_vs_2": "medium (tier 2) vs good"}


def finetune_context(finetune: dict) -> dict:
    """Group fine-tuning results -> tables of CV balanced accuracy before/after.

    Accepts the fine-tuning summary of the group level (``bids_qc.workflows.group``; ``detectors``:
    {name: {status, n_scans, before: {balanced_accuracy, ...}, after: {...}}}, ``tiers``:
    {n_scans, before: {decision: scores}, after: ...}, plus scalars) and the simple form
    {detector: {"before": 0.7, "after": 0.8}, ...}.
    """
    finetune = plain(finetune)
    dets = finetune.get("detectors")
    if not isinstance(dets, dict):
        dets = {k: v for k, v in finetune.items() if isinstance(v, dict) and ("before" in v or "status" in v)}
    rows = []
    for name, v in dets.items():
        if not isinstance(v, dict):
            continue
        n = v.get("n_scans")
        if n is None and isinstance(v.get("before"), dict):
            n = (v["before"].get("n_positive") or 0) + (v["before"].get("n_negative") or 0) or None
        if n is None and "n_positive" in v:
            n = f"{v.get('n_positive', 0)} pos / {v.get('n_negative', 0)} neg"
        rows.append({"name": name, "status": v.get("status", ""), "n": fmt(n),
                     **_before_after(v.get("before"), v.get("after"))})
    tiers, tiers_n = [], None
    tier_info_ = finetune.get("tiers")
    if isinstance(tier_info_, dict) and isinstance(tier_info_.get("before"), dict):
        tiers_n = tier_info_.get("n_scans")
        for key, label in TIER_DECISIONS.items():
            if key in tier_info_["before"]:
                tiers.append({"name": label, **_before_after(tier_info_["before"].get(key),
                                                             (tier_info_.get("after") or {}).get(key))})
    used = {"detectors", "tiers"} | set(dets)
    scalars = [(k, v if isinstance(v, str) else (json.dumps(v) if isinstance(v, (dict, list)) else fmt(v, 4)))
               for k, v in finetune.items() if k not in used]
    return {"scalars": scalars, "detectors": rows, "tiers": tiers, "tiers_n": tiers_n}
