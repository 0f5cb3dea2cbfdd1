"""Checks, in a real browser page, that the reports show what the app decided.

Used by ``scripts/check_reports_chromium.py``; each function takes a loaded page (anything with
``js(expression) -> value``) and returns a list of problems (empty when the page is right).

- :func:`check_threshold_lines`: in the participant report each detector's dashed line sits
  at its own calibrated threshold along its bar (measured from the laid-out boxes), not at one
  common 0.5.
- :func:`check_group_verdicts`: the group report's tier cards, tier column, decided-by
  attribute and rating queue follow the tier column the app decided (``tier_ft`` when the table
  has fine-tuned verdicts, naming the fine-tuned model), and its slab-motion card, chart, row
  flags and filter match the slab verdicts.
"""
from __future__ import annotations

import pandas as pd

THRESHOLD_LINES = """Array.from(document.querySelectorAll('#verdict tr[data-detector]')).map(function (tr) {
  var bar = tr.querySelector('.bar'), line = bar && bar.querySelector('i.threshold');
  if (!line) { return [tr.dataset.detector, null]; }
  var b = bar.getBoundingClientRect(), l = line.getBoundingClientRect();
  return [tr.dataset.detector, (l.left - b.left) / b.width]; })"""

GROUP_STATE = """(function () {
  function text(sel) { var el = document.querySelector(sel); return el ? el.textContent.trim() : null; }
  return {
    cards: [1, 2, 3].map(function (t) { return text('#summary .stat[data-tier="' + t + '"] .n'); }),
    slabCard: text('#n-slab-motion .n'), decidedBy: text('#decided-by'),
    slabCharts: document.querySelectorAll('#slab-chart svg').length,
    rows: Array.from(document.querySelectorAll('#scans tbody tr')).map(function (r) {
      return [r.querySelector('td.name').textContent.trim(), r.dataset.tier, r.dataset.slab,
              r.dataset.decidedBy]; }),
    queue: Array.from(document.querySelectorAll('#queue tr.rating')).map(function (r) {
      return r.dataset.bidsName; })
  };
})()"""

SLAB_FILTER = """(function (on) { var box = document.getElementById('f-slab'); box.checked = on;
  box.dispatchEvent(new Event('change'));
  return Array.from(document.querySelectorAll('#scans tbody tr')).filter(r => !r.hidden)
    .map(r => r.querySelector('td.name').textContent.trim()); })(%s)"""


def check_threshold_lines(page, thresholds: dict, tolerance: float = 0.01) -> list[str]:
    """Each detector's line at its threshold along the bar (fraction of the bar's width)."""
    got = dict(page.js(THRESHOLD_LINES))
    problems = []
    for det, threshold in thresholds.items():
        where = got.get(det)
        if where is None:
            problems.append(f"participant: no threshold line drawn for {det}")
        elif abs(where - threshold) > tolerance:
            problems.append(f"participant: {det} threshold line at {where:.3f} of the bar, "
                            f"its threshold is {threshold}")
    if len({round(v, 2) for v in got.values() if v is not None}) < len(set(thresholds.values())):
        problems.append(f"participant: threshold lines do not follow the thresholds: {got}")
    return problems


def _flag(value) -> str:
    return "" if value is None or pd.isna(value) else ("1" if bool(value) else "0")


def check_group_verdicts(page, table: pd.DataFrame, label: str = "group") -> list[str]:
    """The loaded group report against ``table`` (the table it was rendered from)."""
    fine_tuned = "tier_ft" in table and table["tier_ft"].notna().any()
    tier_col = "tier_ft" if fine_tuned else "tier"
    ok = table[table["status"] == "ok"]
    tiers = pd.to_numeric(ok[tier_col], errors="coerce")
    want_cards = [str(int((tiers == t).sum())) for t in (1, 2, 3)]
    flags = ok["slab_motion"].map(_flag)
    state = page.js(GROUP_STATE)
    problems = []
    if state["cards"] != want_cards:
        problems.append(f"{label}: tier cards {state['cards']}, the {tier_col} verdicts are {want_cards}")
    if state["slabCard"] != str(int((flags == "1").sum())):
        problems.append(f"{label}: slab-motion card says {state['slabCard']}, "
                        f"{int((flags == '1').sum())} scans are flagged")
    if state["slabCharts"] != 1:
        problems.append(f"{label}: no slab-motion chart")
    rows = {name: (tier, slab, by) for name, tier, slab, by in state["rows"]}
    model = None
    if fine_tuned:
        model = str(table["model_id_ft"].dropna().iloc[0])
        if not state["decidedBy"] or model not in state["decidedBy"]:
            problems.append(f"{label}: the report does not name the fine-tuned model {model}")
    for rec in table.to_dict("records"):
        tier, slab, by = rows.get(rec["bids_name"], (None, None, None))
        want = "" if pd.isna(rec[tier_col]) else str(int(rec[tier_col]))
        if tier != want:
            problems.append(f"{label}: {rec['bids_name']} shows tier {tier!r}, {tier_col} is {want!r}")
        if rec["status"] == "ok" and slab != _flag(rec["slab_motion"]):
            problems.append(f"{label}: {rec['bids_name']} slab flag {slab!r}, verdict {rec['slab_motion']}")
        if model and not pd.isna(rec[tier_col]) and by != model:
            problems.append(f"{label}: {rec['bids_name']} decided by {by!r}, not {model}")
    if fine_tuned and "review_rank" in table:
        first = table.loc[pd.to_numeric(table["review_rank"]) == 1, "bids_name"].tolist()
        if state["queue"][:1] != first:
            problems.append(f"{label}: the queue starts with {state['queue'][:1]}, review rank 1 is {first}")
    shown = page.js(SLAB_FILTER % "true")
    if sorted(shown) != sorted(ok.loc[flags == "1", "bids_name"]):
        problems.append(f"{label}: the slab-motion filter shows {shown}")
    page.js(SLAB_FILTER % "false")
    return problems
