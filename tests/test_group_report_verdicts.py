"""The group report shows what the app decided: fine-tuned verdicts (naming the model, the
shipped ones beside them), slab-motion flags, and the site slab-threshold choice."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.reports import write_group_report
from bids_qc.reports.group_report import group_context

FT_MODEL = "conv5fc3-ixi-v2.6-finetuned-2026-12-06"


def section(text: str, ident: str) -> str:
    start = text.index(f'id="{ident}"')
    return text[start: text.index("</section>", start)]


def _table(fine_tuned: bool = True) -> pd.DataFrame:
    """Five ok scans and one error: shipped tiers 1, 1, 3, 2 and two slabs without a tier;
    fine-tuned tiers 2, 1, 3, 1 (two changed)."""
    names = ["sub-01_T1w", "sub-02_T1w", "sub-03_T1w", "sub-04_T1w", "sub-05_T1w", "sub-06_T1w"]
    shipped = [1, 1, 3, 2, None, None]
    tuned = [2, 1, 3, 1, None, None]
    table = pd.DataFrame({
        "bids_name": names, "subject": [n[4:6] for n in names],
        "status": ["ok"] * 5 + ["error"], "error": [None] * 5 + ["boom"],
        "tier": pd.array(shipped, dtype="Int64"),
        "slab_motion_score": [0.1, 0.2, 0.9, 0.3, 0.8, None],
        "slab_motion": pd.array([False, False, True, False, True, None], dtype="boolean"),
        "model_id": ["conv5fc3-ixi-v2.6"] * 6, "uncertainty": [0.1, 0.0, 0.0, 0.05, None, None],
        "needs_review": [False] * 6,
    })
    for a in ARTEFACTS:
        table[f"grade_{a}"] = pd.array([None if t is None else (t - 1 if a == "motion" else 0)
                                        for t in shipped], dtype="Int64")
    for i, d in enumerate(DETECTORS):
        table[f"p_{d}"] = [0.1 + 0.01 * i] * 4 + [None, None]
    if fine_tuned:
        table["tier_ft"] = pd.array(tuned, dtype="Int64")
        for a in ARTEFACTS:
            table[f"grade_{a}_ft"] = pd.array([None if t is None else (t - 1 if a == "motion" else 0)
                                               for t in tuned], dtype="Int64")
        for i, d in enumerate(DETECTORS):
            table[f"p_{d}_ft"] = [0.6 + 0.01 * i] * 4 + [None, None]
        table["model_id_ft"] = [FT_MODEL] * 4 + [None, None]
        table["review_rank"] = pd.array([3, 1, 4, 2, None, None], dtype="Int64")
        table["needs_review"] = [False, True, False, False, None, None]
    return table


def test_finetuned_verdicts_are_shown_everywhere(tmp_path):
    ctx = group_context(_table(), tmp_path / "g.html", tmp_path)
    assert ctx["decision"] == {"fine_tuned": True, "model": FT_MODEL, "parent": "conv5fc3-ixi-v2.6"}
    assert [c["count"] for c in ctx["tier_cards"]] == [2, 1, 1]   # fine-tuned: 1, 1 / 2 / 3
    assert [c["shipped"] for c in ctx["tier_cards"]] == [2, 1, 1]  # shipped: 1, 1 / 2 / 3 too
    rows = {r["bids_name"]: r for r in ctx["rows"]}
    assert rows["sub-01_T1w"]["tier"]["value"] == 2 and rows["sub-01_T1w"]["shipped"]["tier"]["value"] == 1
    assert rows["sub-01_T1w"]["grades"]["motion"] == 1 and rows["sub-01_T1w"]["probs"]["motion_moderate"] == 0.6
    assert rows["sub-01_T1w"]["decided_by"] == FT_MODEL and rows["sub-01_T1w"]["changed"]
    assert rows["sub-05_T1w"]["shipped"] is None  # no fine-tuned verdict: nothing to put beside
    assert ctx["n_changed"] == 2
    # the queue follows the fine-tuning's review ranks, unranked (slab) scans last
    assert [r["bids_name"] for r in ctx["queue"]] == ["sub-02_T1w", "sub-04_T1w", "sub-01_T1w",
                                                      "sub-03_T1w", "sub-05_T1w"]
    text = write_group_report(_table(), tmp_path / "g.html", tmp_path).read_text()
    summary = section(text, "summary")
    assert "fine-tuned model" in summary and FT_MODEL in summary and "2 scans changed tier" in summary
    assert 'shipped model: 2' in summary
    scans = section(text, "all-scans")
    assert re.search(r'data-tier="2" [^>]*data-shipped-tier="1" data-decided-by="' + FT_MODEL, scans)
    queue = section(text, "rating-queue")
    first = re.search(r'<tr class="rating"[^>]*data-bids-name="sub-02_T1w"[^>]*data-model-motion="0"', queue)
    assert first and queue.index("sub-02_T1w") < queue.index("sub-01_T1w")
    assert re.search(r'data-bids-name="sub-01_T1w"[^>]*data-model-motion="1"', queue)  # fine-tuned grade


def test_without_finetuning_the_shipped_verdicts_are_shown(tmp_path):
    ctx = group_context(_table(fine_tuned=False), tmp_path / "g.html", tmp_path)
    assert not ctx["decision"]["fine_tuned"]
    assert [c["count"] for c in ctx["tier_cards"]] == [2, 1, 1]
    assert all(c["shipped"] is None for c in ctx["tier_cards"])
    assert all(r["shipped"] is None for r in ctx["rows"])
    text = write_group_report(_table(fine_tuned=False), tmp_path / "g.html", tmp_path).read_text()
    assert "Verdicts by the shipped model" in section(text, "summary")


def test_a_finetuned_tier_that_differs_changes_the_cards(tmp_path):
    table = _table()
    table["tier_ft"] = pd.array([3, 3, 3, 3, None, None], dtype="Int64")
    ctx = group_context(table, tmp_path / "g.html", tmp_path)
    assert [c["count"] for c in ctx["tier_cards"]] == [0, 0, 4]
    assert [c["shipped"] for c in ctx["tier_cards"]] == [2, 1, 1]


def test_slab_motion_flags_have_a_card_a_chart_and_a_section(tmp_path):
    ctx = group_context(_table(), tmp_path / "g.html", tmp_path)
    slab = ctx["slab"]
    assert slab["all"] == {"motion": 2, "still": 3, "unscored": 0}
    assert slab["no_tier"] == {"motion": 1, "still": 0, "unscored": 0} and slab["n_no_tier"] == 1
    assert slab["threshold"] == "shipped" and slab["choice"] is None
    text = write_group_report(_table(), tmp_path / "g.html", tmp_path).read_text()
    card = re.search(r'id="n-slab-motion"[^>]*><div class="n">(\d+)</div>', text)
    assert card and card.group(1) == "2"
    assert "1 of the 1 scan without a tier" in section(text, "summary")
    assert "<svg" in text[text.index('id="slab-chart"'):]
    assert re.search(r'id="slab-flag-count">2<', section(text, "slab-motion"))
    assert slab["n_fused"] == 0 and re.search(r'id="slab-fused">0 of 5 scans<', section(text, "slab-motion"))
    fused = _table().assign(slab_motion_fused=pd.array([True, True, False, True, True, None], dtype="boolean"))
    assert group_context(fused, tmp_path / "f.html", tmp_path)["slab"]["n_fused"] == 4
    text = write_group_report(fused, tmp_path / "f.html", tmp_path).read_text()
    assert re.search(r'id="slab-fused">4 of 5 scans \(motion makes', section(text, "slab-motion"))
    assert len(re.findall(r'<tr [^>]*data-slab="1"', section(text, "all-scans"))) == 2


@pytest.mark.parametrize("adopted", [True, False])
def test_site_slab_threshold_choice_is_reported(tmp_path, adopted):
    table = _table()
    site = {"shipped_threshold": 0.5, "n_rated": 20, "adopted": adopted,
            "threshold": 0.35 if adopted else 0.5, "site_threshold": 0.35,
            "status": "adopted the site threshold (...)" if adopted else
                      "kept the shipped threshold (the site threshold is not better: ...)",
            "balanced_accuracy": {"shipped_threshold": 0.5, "site_threshold_cross_validated":
                                  0.9 if adopted else 0.467}}
    if adopted:  # what apply_site_threshold adds: the flags at the site threshold
        table["slab_motion_site"] = pd.array([False, False, True, False, False, None], dtype="boolean")
    ctx = group_context(table, tmp_path / "g.html", tmp_path, slab_site=site)
    assert ctx["slab"]["threshold"] == ("site" if adopted else "shipped")
    assert ctx["slab"]["all"]["motion"] == (1 if adopted else 2)
    text = write_group_report(table, tmp_path / "g.html", tmp_path, slab_site=site).read_text()
    part = section(text, "slab-motion")
    heading = "Site threshold: adopted" if adopted else "Site threshold: kept the shipped threshold"
    assert heading in part and "0.500" in part and ("0.900" if adopted else "0.467") in part
    assert "0.35" in part
