"""The group report: one HTML page per dataset (tier counts, slab-motion flags, plots,
site/scanner breakdowns, errors, rating queue and group fine-tuning results), linking to the
participant reports.

It shows what the app decided (:mod:`bids_qc.reports.group_verdicts`): after group fine-tuning,
the fine-tuned model's verdicts, naming that model, with the shipped ones beside them. The rating
widgets export the annotations TSV documented in ``docs/annotations.md``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from markupsafe import Markup

from bids_qc import __version__
from bids_qc.exceptions import BidsQcError
from bids_qc.outputs import atomic_write_text, scan_folder, scan_output_paths
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS
from bids_qc.reports import svg_charts
from bids_qc.reports.finetune_section import finetune_context
from bids_qc.reports.formatting import (
    ANNOTATION_COLUMNS,
    GRADE_COLOURS,
    GRADE_LABELS,
    METRIC_INFO,
    TIER_COLOURS,
    annotation_keys,
    bids_stem,
    entity_label,
    is_missing,
    number_or_none,
    plain,
    tier_info,
)
from bids_qc.reports.group_verdicts import as_bool, decision, row_verdict, slab_summary
from bids_qc.reports.site_scanner import add_site_scanner
from bids_qc.reports.templating import render_template
from bids_qc.review_priority import scan_review
from bids_qc.verdict_counts import slab_flags

_ENTITY_COLUMNS = ("session", "run", "acquisition", "task", "reconstruction", "ceagent", "part",
                   "chunk", "echo", "inversion")


def _error_text(value) -> str:
    if isinstance(value, dict):
        stage = value.get("stage")
        return f"{value.get('message') or value.get('type') or value}" + (f" (stage: {stage})" if stage else "")
    return "" if is_missing(value) else str(value)


def _uncertainty(probs: dict, thresholds: dict | None) -> float | None:
    """The verdict's uncertainty (:func:`bids_qc.review_priority.scan_review`) from the
    probabilities present, for a table without an ``uncertainty`` column; None without
    ``thresholds`` (no threshold is assumed) or probabilities."""
    present = {d: p for d, p in probs.items() if p is not None}
    if not thresholds or not present:
        return None
    return scan_review(present, thresholds)[0]


def _rows(df, html_path: Path, out_dir: Path, cols: dict, decided: dict, thresholds) -> list[dict]:
    """One dict per scan: ids, link, status, the decided verdict (:func:`row_verdict`), metrics."""
    rows = []
    slab_flag, _ = slab_flags(df)  # the site's adopted threshold when there is one
    for rec, flag in zip(df.to_dict("records"), slab_flag.tolist()):
        name = str(rec["bids_name"])
        keys = annotation_keys(name, {"subject": rec.get("subject"), "session": rec.get("session"),
                                      "run": rec.get("run")})
        folder = scan_folder({"subject": keys["participant_id"].removeprefix("sub-"),
                              "session": keys["session"] if keys["session"] != "n/a" else None})
        html = scan_output_paths(out_dir, folder, name)["html"]
        link = quote(Path(os.path.relpath(html, html_path.parent)).as_posix(), safe="/")
        status = "error" if str(rec.get("status", "ok")).lower() == "error" else "ok"
        verdict = row_verdict(rec, decided["fine_tuned"], decided["model"],
                              None if flag is pd.NA else bool(flag))
        unc = (number_or_none(rec.get("uncertainty")) if cols["has_unc"]
               else _uncertainty(verdict["probs"], thresholds))
        rows.append({
            "bids_name": name, "link": link, "ids": keys, "status": status, **verdict,
            "error": _error_text(rec.get("error")) if status == "error" else "",
            "cannot_judge": ("" if status == "error" or is_missing(rec.get("cannot_judge"))
                             else str(rec.get("cannot_judge"))),
            "entities": {c: entity_label(rec.get(c)) for c in cols["entity"]},
            "groups": {c: ("n/a" if is_missing(rec.get(c)) else str(rec.get(c))) for c in cols["group"]},
            "slab": number_or_none(rec.get("slab_motion_score")),
            "metrics": {m: number_or_none(rec.get(m)) for m in METRICS},
            "model_id": "" if is_missing(rec.get("model_id")) else str(rec.get("model_id")),
            "needs_review": as_bool(rec.get("needs_review")) if cols["has_review"] else None,
            "review_rank": number_or_none(rec.get("review_rank")),
            "uncertainty": unc,
        })
    return rows


def _tier_cards(ok: list[dict], decided: dict) -> list[dict]:
    tiers = {t: sum(r["tier"]["value"] == t for r in ok) for t in (1, 2, 3)}
    shipped = {t: sum((r["shipped"] or r)["tier"]["value"] == t for r in ok) for t in (1, 2, 3)}
    n_tiered = sum(tiers.values())
    return [{**tier_info(t), "count": tiers[t], "shipped": shipped[t] if decided["fine_tuned"] else None,
             "share": f"{100 * tiers[t] / n_tiered:.0f} %" if n_tiered else "n/a"} for t in (1, 2, 3)]


def _plots(ok: list[dict], cards: list[dict], n_errors: int, slab: dict) -> dict:
    names = ["tier 1", "tier 2", "tier 3", "error"]
    colours = [TIER_COLOURS[k] for k in (1, 2, 3, None)]
    counts = [c["count"] for c in cards] + [n_errors]
    plots = {"tiers": Markup(svg_charts.bar_chart(  # one series per bar, so each has its colour
        names, [("", colours[i], [counts[i] if j == i else 0 for j in range(4)]) for i in range(4)],
        stacked=True, legend=False, width=300))}
    plots["grades"] = Markup(svg_charts.bar_chart(
        list(ARTEFACTS), [(f"{g} {GRADE_LABELS[g]}", GRADE_COLOURS[g],
                           [sum(r["grades"][a] == g for r in ok) for a in ARTEFACTS]) for g in (0, 1, 2)],
        width=380))
    with_tier = {k: slab["all"][k] - slab["no_tier"][k] for k in ("motion", "still", "unscored")}
    plots["slab"] = Markup(svg_charts.bar_chart(
        ["motion", "no motion", "not scored"],
        [("with a tier", "#7b8794", [with_tier["motion"], with_tier["still"], with_tier["unscored"]]),
         ("without a tier", TIER_COLOURS[3], [slab["no_tier"]["motion"], slab["no_tier"]["still"],
                                              slab["no_tier"]["unscored"]])],
        stacked=True, width=320))
    tier_values = [r["tier"]["value"] if r["tier"]["value"] is not None else np.nan for r in ok]
    plots["metrics"] = [Markup(svg_charts.histogram_chart(
        [np.nan if r["metrics"][m] is None else r["metrics"][m] for r in ok], tier_values,
        title=METRIC_INFO[m][0], legend=i == 0)) for i, m in enumerate(METRICS)]
    plots["probabilities"] = [Markup(svg_charts.histogram_chart(
        [np.nan if r["probs"][d] is None else r["probs"][d] for r in ok], tier_values,
        title=d.replace("_", " "), legend=i == 0, value_range=(0.0, 1.0), bins=20))
        for i, d in enumerate(DETECTORS)]
    return plots


def _breakdowns(rows: list[dict], group_cols: list[str]) -> list[dict]:
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
                               "tiers": counts, "slab_motion": sum(g["slab_flag"] is True for g in good),
                               "medians": medians})
        breakdowns.append({"column": col, "rows": table_rows, "plot": Markup(svg_charts.share_chart(shares))})
    return breakdowns


def _queue(ok: list[dict]) -> list[dict]:
    """The scans to rate, most informative first: by ``review_rank`` when the table has one
    (group fine-tuning, :mod:`bids_qc.review_priority`), else flagged first then uncertainty."""
    def key(r):
        rank = r["review_rank"] if r["review_rank"] is not None else float("inf")
        unc = r["uncertainty"] if r["uncertainty"] is not None else -1.0
        return (rank, -(1 if r["needs_review"] else 0), -unc, r["bids_name"])

    return sorted(ok, key=key)


def group_context(table, html_path: Path, out_dir: Path, *, finetune: dict | None = None,
                  thresholds: dict | None = None, incomplete: list | None = None,
                  slab_site: dict | None = None) -> dict:
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
    cols = {"entity": [c for c in _ENTITY_COLUMNS
                       if c in df and any(entity_label(v) != "n/a" for v in df[c])],
            "group": [c for c in ("site", "scanner") if c in df and df[c].notna().any()],
            "has_review": "needs_review" in df, "has_unc": "uncertainty" in df}
    decided = decision(df, finetune)
    rows = _rows(df, html_path, out_dir, cols, decided, thresholds)
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    cards = _tier_cards(ok, decided)
    slab = slab_summary(rows, slab_site)
    root = Path(os.path.relpath(out_dir, html_path.parent)).as_posix().rstrip("/") + "/"
    return {
        "title": "bids_qc group report", "rows": rows, "n": len(rows), "n_ok": len(ok),
        "n_error": len(errors), "errors": errors, "tier_cards": cards,
        "plots": _plots(ok, cards, len(errors), slab) if rows else {},
        "unjudged": [r for r in ok if r["cannot_judge"]], "incomplete": plain(incomplete or []),
        "entity_cols": cols["entity"], "group_cols": cols["group"],
        "breakdowns": _breakdowns(rows, cols["group"]), "decision": decided, "slab": slab,
        "n_changed": sum(r["changed"] for r in ok),
        "has_review": cols["has_review"], "has_uncertainty": cols["has_unc"], "queue": _queue(ok),
        "has_rank": any(r["review_rank"] is not None for r in ok),
        "finetune": finetune_context(finetune) if finetune else None,
        "models": sorted({r["model_id"] for r in rows if r["model_id"]}
                         | {r["decided_by"] for r in rows if r["decided_by"]}),
        "detectors": DETECTORS, "artefacts": ARTEFACTS,
        "metrics": [(m, METRIC_INFO[m][0]) for m in METRICS],
        "annotation_columns": ANNOTATION_COLUMNS, "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"), "out_dir": str(out_dir), "root": root,
    }


def render_group_report(table, html_path, out_dir, *, finetune: dict | None = None,
                        thresholds: dict | None = None, incomplete: list | None = None,
                        slab_site: dict | None = None) -> str:
    """HTML text of the group report (see :func:`write_group_report`)."""
    return render_template("group.html.j2", group_context(
        table, Path(html_path), Path(out_dir), finetune=finetune, thresholds=thresholds,
        incomplete=incomplete, slab_site=slab_site))


def write_group_report(table, html_path, out_dir, *, finetune: dict | None = None,
                       thresholds: dict | None = None, incomplete: list | None = None,
                       slab_site: dict | None = None) -> Path:
    """Write the group report for ``table`` (one row per scan) to ``html_path``.

    ``out_dir`` is the derivatives folder holding ``sub-X/[ses-Y/]anat/<bids_name>_qc.html``;
    links are relative to ``html_path``. ``finetune`` (optional) holds group fine-tuning
    results, e.g. ``{"motion_moderate": {"before": 0.71, "after": 0.83}, "n_rated": 40}``;
    when ``table`` has fine-tuned columns (``tier_ft``, ``grade_<artefact>_ft``,
    ``p_<detector>_ft``, ``model_id_ft``) the report shows those verdicts and names the model,
    with the shipped ones as secondary information.
    The uncertainty shown is the table's (the verdict's, written at participant level or by
    fine-tuning); a table without that column gets it computed here by the same definition
    from the probabilities at ``thresholds`` (``{detector: threshold}``), else none is shown.
    ``incomplete``: scans a participant run has not written yet
    (:func:`bids_qc.outputs.incomplete_scans`), shown in a warning at the top.
    ``slab_site``: the site slab-motion threshold choice
    (:func:`bids_qc.training.slab.site_threshold.site_threshold`), shown with both figures.
    """
    html_path = Path(html_path)
    return atomic_write_text(html_path, render_group_report(table, html_path, out_dir, finetune=finetune,
                                                     thresholds=thresholds, incomplete=incomplete,
                                                     slab_site=slab_site))
