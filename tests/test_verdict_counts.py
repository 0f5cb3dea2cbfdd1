"""Verdict counts for group_summary.json and the log: fine-tuned tiers, slab-motion flags."""
import pandas as pd

from bids_qc.verdict_counts import slab_counts, summary_line, tier_column, tier_counts


def _table(**extra):
    base = {"status": ["ok", "ok", "ok", "ok", "error"],
            "tier": pd.array([1, 3, None, None, None], dtype="Int64"),
            "slab_motion": pd.array([False, True, True, None, None], dtype="boolean")}
    return pd.DataFrame({**base, **extra})


def test_slab_flags_counted_with_and_without_a_tier():
    counts = slab_counts(_table())
    assert counts == {"threshold": "shipped", "motion": 2, "no motion": 1, "not scored": 1,
                      "without_tier": {"motion": 1, "no motion": 0, "not scored": 1}}


def test_adopted_site_threshold_and_finetuned_tiers_are_what_counts():
    table = _table(slab_motion_site=pd.array([True, True, False, None, None], dtype="boolean"),
                   tier_ft=pd.array([2, 3, None, None, None], dtype="Int64"))
    assert tier_column(table) == "tier_ft"
    assert tier_counts(table, "tier_ft") == {"1": 0, "2": 1, "3": 1, "n/a": 2}
    counts = slab_counts(table)
    assert counts["threshold"] == "site" and counts["motion"] == 2
    assert counts["without_tier"] == {"motion": 0, "no motion": 1, "not scored": 1}
    summary = {"tiers": tier_counts(table), "tiers_finetuned": tier_counts(table, "tier_ft"),
               "finetuning": {"model_id": "m-finetuned-2026-01-01"}, "slab_motion": counts}
    line = summary_line(summary)
    assert line.startswith("tiers (fine-tuned model m-finetuned-2026-01-01): 1 good 0, 2 medium 1, "
                           "3 reject 1, no tier 2")
    assert "slab motion (site threshold): 2 flagged" in line
    assert "of the scans without a tier 0 flagged, 1 not, 1 not scored" in line


def test_a_tsv_read_back_still_counts():
    """group_T1w.tsv read with pandas gives object columns of True/False strings or bools."""
    table = _table(slab_motion=["False", "True", "true", "n/a", "n/a"]).replace("n/a", None)
    assert slab_counts(table)["motion"] == 2
