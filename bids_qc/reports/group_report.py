"""The group report: one HTML page per dataset (tier counts, plots, site/scanner breakdowns,
errors, rating queue and group fine-tuning results), linking to the participant reports.

The rating widgets export the annotations TSV documented in ``docs/annotations.md``.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
from markupsafe import Markup

from bids_qc import __version__
from bids_qc.exceptions import BidsQcError
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS
from bids_qc.reports import svg_charts
from bids_qc.reports.formatting import (
    ANNOTATION_COLUMNS,
    GRADE_COLOURS,
    GRADE_LABELS,
    METRIC_INFO,
    TIER_COLOURS,
    annotation_keys,
    bids_stem,
    entity_label,
    fmt,
    int_or_none,
    is_missing,
    plain,
    tier_info,
)
from bids_qc.reports.site_scanner import add_site_scanner
from bids_qc.reports.templating import render_template, write_text
from bids_qc.verdict import review

_ENTITY_COLUMNS = ("session", "run", "acquisition", "task", "reconstruction", "ceagent", "part",
                   "chunk", "echo", "inversion")


def _num(value):
    if is_missing(value) or isinstance(value, str):
        try:
            return float(value) if isinstance(value, str) and value not in ("", "n/a") else None
        except ValueError:
            return None
    try:
        val = float(value)
    except (TypeError, ValueError):
        return None
    return val if math.isfinite(val) else None


def _error_text(value) -> str:
    if isinstance(value, dict):
        stage = value.get("stage")
        return f"{value.get('message') or value.get('type') or value}" + (f" (stage: {stage})" if stage else "")
    return "" if is_missing(value) else str(value)


def _bool(value):
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _uncertainty(probs: dict, thresholds: dict | None) -> float | None:
    """The verdict's uncertainty (:func:`bids_qc.verdict.review`, no ensemble spread) from the
    probabilities present, for a table without an ``uncertainty`` column; None without
    ``thresholds`` (no threshold is assumed) or probabilities."""
    present = {d: p for d, p in probs.items() if p is not None}
    if not thresholds or not present:
        return None
    return review(present, thresholds)[0]


def _score(value, key: str = "balanced_accuracy"):
    """A score given as a number, or as a dict of scores (``key`` picked)."""
    return _num(value.get(key)) if isinstance(value, dict) else _num(value)


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


def group_context(table, html_path: Path, out_dir: Path, *, finetune: dict | None = None,
                  thresholds: dict | None = None, incomplete: list | None = None) -> dict:
    """Everything the group template shows; ``table`` is the per-scan DataFrame."""
    import pandas as pd

    df = pd.DataFrame(table).copy().reset_index(drop=True)
    if "bids_name" not in df:
        if "source_file" not in df:
            raise BidsQcError("group report: the table needs a bids_name or source_file column")
        df["bids_name"] = [bids_stem(s) for s in df["source_file"]]
    if "subject" not in df:
        df["subject"] = [annotation_keys(str(n))["participant_id"] for n in df["bids_name"]]
    df = add_site_scanner(df, out_dir)
    entity_cols = [c for c in _ENTITY_COLUMNS
                   if c in df and any(entity_label(v) != "n/a" for v in df[c])]
    group_cols = [c for c in ("site", "scanner") if c in df and df[c].notna().any()]
    has_review, has_unc = "needs_review" in df, "uncertainty" in df

    rows = []
    for rec in df.to_dict("records"):
        name = str(rec["bids_name"])
        keys = annotation_keys(name, {"subject": rec.get("subject"), "session": rec.get("session"),
                                      "run": rec.get("run")})
        subject = keys["participant_id"]
        rel = Path(subject) / (f"ses-{keys['session']}" if keys["session"] != "n/a" else "") / "anat"
        target = out_dir / rel / f"{name}_qc.html"
        link = quote(Path(os.path.relpath(target, html_path.parent)).as_posix(), safe="/")
        status = "error" if str(rec.get("status", "ok")).lower() == "error" else "ok"
        probs = {d: _num(rec.get(f"p_{d}")) for d in DETECTORS}
        unc = _num(rec.get("uncertainty")) if has_unc else _uncertainty(probs, thresholds)
        grades = {a: int_or_none(rec.get(f"grade_{a}")) for a in ARTEFACTS}
        rows.append({
            "bids_name": name, "link": link, "ids": keys, "status": status,

            "error": _error_text(rec.get("error")) if status == "error" else "",
            "cannot_judge": ("" if status == "error" or is_missing(rec.get("cannot_judge"))
                             else str(rec.get("cannot_judge"))),
            "entities": {c: entity_label(rec.get(c)) for c in entity_cols},
            "groups": {c: ("n/a" if is_missing(rec.get(c)) else str(rec.get(c))) for c in group_cols},
            "tier": tier_info(rec.get("tier")), "grades": grades, "probs": probs,
            "slab": _num(rec.get("slab_motion_score")),
            "metrics": {m: _num(rec.get(m)) for m in METRICS},
            "model_id": "" if is_missing(rec.get("model_id")) else str(rec.get("model_id")),
            "needs_review": _bool(rec.get("needs_review")) if has_review else None,
            "uncertainty": unc,
        })

    ok = [r for r in rows if r["status"] == "ok"]
    tiers = {t: sum(r["tier"]["value"] == t for r in ok) for t in (1, 2, 3)}
    n_tiered = sum(tiers.values())
    tier_cards = [{**tier_info(t), "count": tiers[t],
                   "share": f"{100 * tiers[t] / n_tiered:.0f} %" if n_tiered else "n/a"} for t in (1, 2, 3)]
    errors = [r for r in rows if r["status"] == "error"]
    unjudged = [r for r in ok if r["cannot_judge"]]

    plots = {}
    if rows:
        names = ["tier 1", "tier 2", "tier 3", "error"]
        colours = [TIER_COLOURS[k] for k in (1, 2, 3, None)]
        counts = [tiers[1], tiers[2], tiers[3], len(errors)]
        plots["tiers"] = Markup(svg_charts.bar_chart(  # one series per bar, so each has its colour
            names, [("", colours[i], [counts[i] if j == i else 0 for j in range(4)]) for i in range(4)],
            stacked=True, legend=False, width=300))
        plots["grades"] = Markup(svg_charts.bar_chart(
            list(ARTEFACTS), [(f"{g} {GRADE_LABELS[g]}", GRADE_COLOURS[g],
                               [sum(r["grades"][a] == g for r in ok) for a in ARTEFACTS]) for g in (0, 1, 2)],
            width=380))
        tier_values = [r["tier"]["value"] if r["tier"]["value"] is not None else np.nan for r in ok]
        plots["metrics"] = [Markup(svg_charts.histogram_chart(
            [np.nan if r["metrics"][m] is None else r["metrics"][m] for r in ok], tier_values,
            title=METRIC_INFO[m][0], legend=i == 0)) for i, m in enumerate(METRICS)]
        plots["probabilities"] = [Markup(svg_charts.histogram_chart(
            [np.nan if r["probs"][d] is None else r["probs"][d] for r in ok], tier_values,
            title=d.replace("_", " "), legend=i == 0, value_range=(0.0, 1.0), bins=20))
            for i, d in enumerate(DETECTORS)]

    breakdowns = []
    for col in group_cols:
        by: dict[str, list] = {}
        for r in rows:
            by.setdefault(r["groups"][col], []).append(r)
        table_rows, shares = [], {}
        for label, members in sorted(by.items()):
            good = [m for m in members if m["status"] == "ok"]
            counts = {t: sum(m["tier"]["value"] == t for m in good) for t in (1, 2, 3)}
            counts[None] = len(members) - sum(counts.values())
            shares[label] = counts
            medians = {}
            for m in METRICS:
                vals = [g["metrics"][m] for g in good if g["metrics"][m] is not None]
                medians[m] = float(np.median(vals)) if vals else None
            table_rows.append({"label": label, "n": len(members), "errors": len(members) - len(good),
                               "tiers": counts, "medians": medians})
        breakdowns.append({"column": col, "rows": table_rows, "plot": Markup(svg_charts.share_chart(shares))})

    def need_key(r):
        flag = 1 if r["needs_review"] else 0
        return (-flag, -(r["uncertainty"] if r["uncertainty"] is not None else -1.0), r["bids_name"])

    queue = sorted(ok, key=need_key)
    ft = finetune_context(finetune) if finetune else None
    models = sorted({r["model_id"] for r in rows if r["model_id"]})
    root = Path(os.path.relpath(out_dir, html_path.parent)).as_posix().rstrip("/") + "/"
    return {
        "title": "bids_qc group report", "rows": rows, "n": len(rows), "n_ok": len(ok),
        "n_error": len(errors), "errors": errors, "tier_cards": tier_cards, "plots": plots,
        "unjudged": unjudged, "incomplete": plain(incomplete or []),
        "entity_cols": entity_cols, "group_cols": group_cols, "breakdowns": breakdowns,
        "has_review": has_review, "has_uncertainty": has_unc, "queue": queue,
        "finetune": ft, "models": models, "detectors": DETECTORS, "artefacts": ARTEFACTS,
        "metrics": [(m, METRIC_INFO[m][0]) for m in METRICS],
        "annotation_columns": ANNOTATION_COLUMNS, "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"), "out_dir": str(out_dir), "root": root,
    }


def render_group_report(table, html_path, out_dir, *, finetune: dict | None = None,
                        thresholds: dict | None = None, incomplete: list | None = None) -> str:
    """HTML text of the group report (see :func:`write_group_report`)."""
    return render_template("group.html.j2", group_context(table, Path(html_path), Path(out_dir),
                                                          finetune=finetune, thresholds=thresholds,
                                                          incomplete=incomplete))


def write_group_report(table, html_path, out_dir, *, finetune: dict | None = None,
                       thresholds: dict | None = None, incomplete: list | None = None) -> Path:
    """Write the group report for ``table`` (one row per scan) to ``html_path``.

    ``out_dir`` is the derivatives folder holding ``sub-X/[ses-Y/]anat/<bids_name>_qc.html``;
    links are relative to ``html_path``. ``finetune`` (optional) holds group fine-tuning
    results, e.g. ``{"motion_moderate": {"before": 0.71, "after": 0.83}, "n_rated": 40}``.
    The uncertainty shown is the table's (the verdict's, written at participant level or by
    fine-tuning); a table without that column gets it computed here by the same definition
    from the probabilities at ``thresholds`` (``{detector: threshold}``), else none is shown.
    ``incomplete``: scans a participant run has not written yet
    (:func:`bids_qc.outputs.incomplete_scans`), shown in a warning at the top.
    """
    html_path = Path(html_path)
    return write_text(html_path, render_group_report(table, html_path, out_dir, finetune=finetune,
                                                     thresholds=thresholds, incomplete=incomplete))
