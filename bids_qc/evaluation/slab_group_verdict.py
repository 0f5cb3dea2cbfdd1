"""The slab motion verdict relative to the scan's scanner group (group level, no ratings needed).

The slab detector ranks motion well within a scanner but its level moves between scanners: still
scans of a smoother or otherwise different scanner score above the threshold set on IXI
(``benchmarks/SHIPPING_RULE_slab_group.md``). MRIQC's classifier met the same problem with its
image-quality metrics and standardised them per site; this does it for the slab score.

Scans are grouped by scanner (:func:`scanner_groups`). In a group of at least ``MIN_GROUP`` scored
scans, a scan is flagged when the shipped verdict says motion *and* its score's logit lies at least
``K`` robust spreads above the group's median logit (spread = 1.4826 x MAD, at least
``MIN_SPREAD``). ``K`` = 1.28 flags 10 % of a group of clean scans whose logits are normal. A group
with mostly moving scans hides them (they set the median): the verdict is relative, and says so.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

K = 1.28
MIN_GROUP = 8
MIN_SPREAD = 0.5  # logits; a group of near-identical scores must not flag its top scan
_EPS = 1e-7
_SCANNER_COLUMNS = ("manufacturer", "manufacturers_model_name", "magnetic_field_strength")


def logit(scores) -> np.ndarray:
    p = np.clip(np.asarray(scores, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def scanner_groups(table: pd.DataFrame) -> pd.Series:
    """Each row's group: its ``site`` when the table has any, else the scanner fields
    (manufacturer, model, field strength) when it has any, else one group, ``"all scans"``."""
    def present(column):
        return column in table and table[column].notna().any()

    if present("site"):
        return table["site"].astype("string").fillna("site n/a")
    columns = [c for c in _SCANNER_COLUMNS if present(c)]
    if columns:
        parts = table[columns].astype("string").fillna("n/a")
        return parts.apply(lambda row: " / ".join(row), axis=1).astype("string")
    return pd.Series("all scans", index=table.index, dtype="string")


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


def add_group_verdict(table: pd.DataFrame) -> dict:
    """Adds ``slab_motion_group`` (the group key), ``slab_motion_z`` and ``slab_motion_in_group``
    (the relative verdict; missing in groups smaller than ``MIN_GROUP``) to ``table``; returns a
    summary per group for ``group_summary.json``."""
    if "slab_motion_score" not in table or table["slab_motion_score"].isna().all():
        return {"status": "no slab scores", "groups": {}}
    groups = scanner_groups(table)
    z, flag = relative_flags(pd.to_numeric(table["slab_motion_score"], errors="coerce"),
                             groups.to_numpy(object),
                             pd.to_numeric(table["slab_motion_threshold"], errors="coerce"))
    table["slab_motion_group"] = groups
    table["slab_motion_z"] = z
    table["slab_motion_in_group"] = pd.array(flag, dtype="boolean")
    summary = {}
    for g, rows in table.groupby("slab_motion_group", sort=True):
        scored = int(pd.to_numeric(rows["slab_motion_score"], errors="coerce").notna().sum())
        judged = rows["slab_motion_in_group"].notna().sum() > 0
        summary[str(g)] = {"n_scored": scored,
                           "motion": int(rows["slab_motion_in_group"].fillna(False).sum()),
                           "status": "relative verdict" if judged else
                           f"too few scored scans (< {MIN_GROUP}): shipped verdict only"}
    return {"status": "computed", "k": K, "min_group": MIN_GROUP, "groups": summary}
