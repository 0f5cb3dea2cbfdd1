"""Real-browser check of the reports: headless Chromium loads each page without console
errors, the injected file name stays text, the participant report draws each detector's own
threshold line, the group reports show the decided tiers (fine-tuned when the table has them)
and the slab-motion flags, the rating widgets download the annotations TSV, and full-page
screenshots are written. Skips when Chromium is not installed.

The driver lives in scripts/check_reports_chromium.py (also runnable by hand).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _driver():
    spec = importlib.util.spec_from_file_location("check_reports_chromium",
                                                  ROOT / "scripts" / "check_reports_chromium.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


driver = _driver()
CHROMIUM = driver.find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_reports_in_headless_chromium(tmp_path):
    result = driver.run_checks(CHROMIUM, tmp_path)  # synthetic data: no shared data needed
    assert result["problems"] == []
    names = sorted(p.name for p in result["screenshots"])
    assert names == ["group.png", "group_finetuned.png", "participant.png", "participant_error.png",
                     "participant_evil.png", "participant_slab.png"]
    for shot in result["screenshots"]:
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # the group queue lists the scans to rate (error scan excluded), flagged ones first
    table = result["demo"]["table"].set_index("bids_name")
    assert "sub-03_T1w" not in result["queue"] and len(result["queue"]) == 6
    flags = [bool(table.loc[n, "needs_review"]) for n in result["queue"]]
    assert flags == sorted(flags, reverse=True) and flags[0]
    # a rating made in a participant page shows up in the group queue (same derivatives folder)
    assert result["storage_shared"]
    # the file the browser downloaded is read by the group-level fine-tuning: the loop closes
    annotations = pytest.importorskip("bids_qc.annotations")
    names = result["demo"]["names"]
    table = pd.DataFrame({"bids_name": names,
                          "subject": [n.split("_")[0][4:] for n in names],
                          "session": [next((p[4:] for p in n.split("_") if p.startswith("ses-")), None)
                                      for n in names],
                          "run": [None] * len(names)})
    ratings = annotations.read_annotations(result["downloads"] / "annotations.tsv", table)
    got = ratings.set_index("bids_name")
    assert got.loc["sub-01_ses-1_run-1_T1w", "motion"] == 2 and got.loc["sub-01_ses-1_run-1_T1w", "tier_override"] == 3
    assert got.loc["sub-01_ses-1_run-1_T1w", "comment"] == "ghosting in frontal lobe"
    second = result["queue"][1]
    assert got.loc[second, "noise"] == 1 and got.loc[second, "comment"] == "rated in queue"


def test_chromium_checks_catch_a_broken_page(tmp_path):
    """The console-error detection itself works: a page with a JS error is reported."""
    if CHROMIUM is None:
        pytest.skip("Chromium not installed")
    page_file = tmp_path / "broken.html"
    page_file.write_text("<!DOCTYPE html><title>x</title><script>undefinedFunction();</script>")
    browser = driver.Browser(CHROMIUM, tmp_path / "profile")
    try:
        page = driver.Page.open(browser)
        page.goto(page_file.as_uri())
        assert any("undefinedFunction" in p for p in page.problems), page.problems
    finally:
        browser.close()


def test_chromium_checks_catch_reports_that_do_not_show_the_decision(tmp_path):
    """The verdict checks fail on pages that show something else: a group report rendered
    without the fine-tuned columns (the shipped tiers) checked against the fine-tuned table,
    slab flags that differ, and threshold lines expected at other thresholds."""
    if CHROMIUM is None:
        pytest.skip("Chromium not installed")
    from report_verdict_checks import check_group_verdicts, check_threshold_lines

    from bids_qc.reports import write_group_report

    demo = driver.build_demo(tmp_path / "derivatives")
    tuned = demo["table_finetuned"]
    shipped_only = tuned[[c for c in tuned.columns if not c.endswith("_ft")]]
    stale = write_group_report(shipped_only, tmp_path / "derivatives" / "stale.html", tmp_path / "derivatives")
    browser = driver.Browser(CHROMIUM, tmp_path / "profile")
    try:
        page = driver.Page.open(browser)
        page.goto(stale.as_uri())
        problems = check_group_verdicts(page, tuned, "stale")
        assert any("tier cards" in p for p in problems), problems
        assert any("does not name the fine-tuned model" in p for p in problems), problems
        flipped = demo["table"].copy()
        flipped["slab_motion"] = flipped["slab_motion"].map(lambda v: None if v is None else not v)
        page.goto(demo["group"].as_uri())
        assert check_group_verdicts(page, demo["table"]) == []
        assert any("slab-motion card" in p for p in check_group_verdicts(page, flipped))
        page.goto(demo["participant"].as_uri())
        assert check_threshold_lines(page, demo["thresholds"]) == []
        at_half = {d: 0.5 for d in demo["thresholds"]}
        assert len(check_threshold_lines(page, at_half)) >= 4  # 4 of 6 shipped thresholds are not 0.5
    finally:
        browser.close()
