"""Counts of the verdicts the app decided, for ``group_summary.json`` and the log.

Two kinds of verdict: a tier (the six registered detectors) and a slab-motion flag (the slab
detector, which also judges partial-coverage slabs that get no tier). After group fine-tuning
the tiers that count are the fine-tuned model's (``tier_ft``); with an adopted site threshold
the slab flags are the site's (``slab_motion_site``). The shipped counts stay in the summary.
"""
from __future__ import annotations

import pandas as pd


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"] if "status" in table else table


def slab_flags(table: pd.DataFrame) -> tuple[pd.Series, str]:
    """``(flag per scan, column used)``: ``slab_motion_site`` when the site threshold was adopted
    (the column exists), else the shipped ``slab_motion``; missing where not scored."""
    column = "slab_motion_site" if "slab_motion_site" in table else "slab_motion"
    if column not in table:
        return pd.Series(pd.NA, index=table.index, dtype="boolean"), column
    values = table[column].map(lambda v: v if isinstance(v, bool) or pd.isna(v)
                               else str(v).strip().lower() in ("true", "1", "yes"))
    return values.astype("boolean"), column


def slab_counts(table: pd.DataFrame) -> dict:
    """Slab-motion flags of the ok scans: all of them and those without a tier, plus the
    threshold column used (``slab_motion`` shipped or ``slab_motion_site``)."""
    ok = _ok(table)
    flags, column = slab_flags(ok)
    tier = tier_column(ok)
    no_tier = ok[tier].isna() if tier in ok else pd.Series(True, index=ok.index)

    def counts(f):
        return {"motion": int(f.fillna(False).sum()), "no motion": int((f == False).sum()),  # noqa: E712
                "not scored": int(f.isna().sum())}

    return {"threshold": "site" if column == "slab_motion_site" else "shipped",
            **counts(flags), "without_tier": counts(flags[no_tier])}


def tier_column(table: pd.DataFrame) -> str:
    """``tier_ft`` when the table has fine-tuned verdicts, else ``tier``."""
    return "tier_ft" if "tier_ft" in table and table["tier_ft"].notna().any() else "tier"


def tier_counts(table: pd.DataFrame, column: str = "tier") -> dict:
    """``{"1": n, "2": n, "3": n, "n/a": n}`` over the ok scans."""
    series = pd.to_numeric(_ok(table)[column], errors="coerce")
    counts = {str(t): int((series == t).sum()) for t in (1, 2, 3)}
    counts["n/a"] = int(series.isna().sum())
    return counts


def summary_line(summary: dict) -> str:
    """The log's one-line verdict summary: tiers (fine-tuned when there are), the scans without a
    tier, and the slab-motion flags."""
    ft = summary.get("finetuning") or {}
    tiers = summary.get("tiers_finetuned") or summary.get("tiers") or {}
    model = (f" (fine-tuned model {ft['model_id']})" if summary.get("tiers_finetuned")
             and ft.get("model_id") else "")
    text = f"tiers{model}: 1 good {tiers.get('1', 0)}, 2 medium {tiers.get('2', 0)}, " \
           f"3 reject {tiers.get('3', 0)}, no tier {tiers.get('n/a', 0)}"
    slab = summary.get("slab_motion")
    if slab:
        without = slab["without_tier"]
        text += (f"; slab motion ({slab['threshold']} threshold): {slab['motion']} flagged, "
                 f"{slab['no motion']} not, {slab['not scored']} not scored; of the scans without "
                 f"a tier {without['motion']} flagged, {without['no motion']} not, "
                 f"{without['not scored']} not scored")
    return text
