"""Group level: gather the per-scan records into a table, a summary and a report.

The work is a few pandas operations on small JSON files, so it runs in-process without a
nipype graph (a one-node workflow would only add a work directory and pickling).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from bids_qc.outputs import (
    GROUP_REPORT,
    GROUP_SUMMARY,
    GROUP_TSV,
    atomic_write_json,
    collect_records,
    incomplete_scans,
    records_to_table,
    summarise,
    write_table,
)

LOGGER = logging.getLogger(__name__)


class NoRecordsFound(LookupError):
    """The output folder holds no participant-level results matching the selection."""


def _select(records: list[dict], participant_label, session_id) -> list[dict]:
    def keep(record):
        entities = record.get("entities") or {}
        if participant_label and entities.get("subject") not in participant_label:
            return False
        return not session_id or entities.get("session") in session_id

    return [r for r in records if keep(r)]


def _incomplete(output_dir: Path) -> list[dict]:
    """Scans a participant run (running now, or killed) has not written yet; logged."""
    incomplete = incomplete_scans(output_dir)
    runs: dict[tuple, list] = {}
    for scan in incomplete:
        runs.setdefault((scan["run"], scan["pid"], scan["started_utc"]), []).append(scan)
    for (state, pid, started), scans in runs.items():
        names = ", ".join(s["source_file"] for s in scans[:10])
        LOGGER.warning("INCOMPLETE: a participant run (pid %s, started %s, %s) has not written "
                       "%d scan(s) yet, so the group outputs leave them out or show an older "
                       "record: %s%s; run the group level again when it has finished", pid,
                       started, state, len(scans), names, " ..." if len(scans) > 10 else "")
    return incomplete


def _write_group_report(table, output_dir: Path, finetune: dict | None,
                        incomplete: list | None = None) -> Path | None:
    try:
        from bids_qc.reports.group_report import write_group_report
    except ImportError as exc:
        LOGGER.warning("group HTML report unavailable (%s)", exc)
        return None
    final = output_dir / GROUP_REPORT
    try:  # the renderer writes atomically itself (tmp file + os.replace)
        write_group_report(table, final, output_dir, finetune=finetune, incomplete=incomplete)
    except Exception as exc:  # the table and summary are already written; say so and go on
        LOGGER.warning("group report failed: %s: %s", exc.__class__.__name__, exc)
        return None
    return final


def _slab_site_threshold(table, ratings) -> dict | None:
    """The site's slab motion threshold from its ratings (None without slab scores)."""
    if "slab_motion_score" not in table or table["slab_motion_score"].isna().all():
        return None
    from bids_qc.slab_motion.site_threshold import apply_site_threshold

    thresholds = pd.to_numeric(table.get("slab_motion_threshold"), errors="coerce").dropna()
    shipped = float(thresholds.iloc[0]) if len(thresholds) else float("nan")
    result = apply_site_threshold(table, ratings, shipped)
    if "threshold" in result:
        ba = result["balanced_accuracy"]
        LOGGER.info("slab motion threshold for this site: %.4g (shipped %.4g); balanced accuracy "
                    "on the ratings %.3f with the shipped threshold, %.3f with the site's "
                    "(cross-validated by subject)", result["threshold"], shipped,
                    ba["shipped_threshold"], ba["site_threshold_cross_validated"])
    else:
        LOGGER.info("slab motion threshold: %s", result["status"])
    return result


def _use_ratings(config, table, summary: dict, output_dir: Path) -> None:
    """``--annotations``: the slab motion threshold of this site, then (if any scan has a tier:
    slabs alone give the registered detectors nothing to learn from) fine-tuning."""
    from bids_qc.annotations import read_annotations
    from bids_qc.exceptions import AnnotationError
    from bids_qc.finetune_group import run_group_finetuning

    ratings = read_annotations(config.annotations, table)
    summary["slab_motion_site"] = _slab_site_threshold(table, ratings)
    write_table(output_dir / GROUP_TSV, table)
    atomic_write_json(output_dir / GROUP_SUMMARY, summary)
    if not table["tier"].notna().any():
        LOGGER.warning("no scan has a tier (all partial coverage or failed): the detectors are "
                       "not fine-tuned; only the slab motion threshold was set from the ratings")
        return
    LOGGER.info("fine-tuning the detectors on the ratings in %s", config.annotations)
    try:
        summary["finetuning"] = run_group_finetuning(config, table, ratings=ratings)
    except AnnotationError:
        raise
    except ValueError as exc:  # e.g. too few usable ratings: a problem with the data given
        raise AnnotationError(config.annotations, str(exc)) from exc
    atomic_write_json(output_dir / GROUP_SUMMARY, summary)


def run_group_level(config) -> dict:
    """Write ``group_T1w.tsv``, ``group_summary.json`` and (if ``config.reports``)
    ``group_report.html`` in ``config.output_dir``; fine-tune on ``config.annotations`` if set.

    Returns the summary dict. Raises :class:`NoRecordsFound` when there is nothing to
    gather, :class:`bids_qc.exceptions.AnnotationError` for a bad ratings file and
    ``OSError`` when an output cannot be written.
    """
    output_dir = Path(config.output_dir)
    records = _select(collect_records(output_dir), config.participant_label, config.session_id)
    if not records:
        raise NoRecordsFound(
            f"no *_qc.json records in {output_dir} match the selection; "
            "run the participant level first"
        )
    table = records_to_table(records)
    summary = summarise(table)
    summary["incomplete"] = _incomplete(output_dir)
    write_table(output_dir / GROUP_TSV, table)
    atomic_write_json(output_dir / GROUP_SUMMARY, summary)
    LOGGER.info(
        "group table: %d scans (%d ok, %d failed) -> %s",
        summary["n_scans"], summary["n_ok"], summary["n_error"], output_dir / GROUP_TSV,
    )
    if config.annotations is not None:
        _use_ratings(config, table, summary, output_dir)
    if config.reports:
        report = _write_group_report(table, output_dir, summary.get("finetuning"),
                                     summary["incomplete"])
        if report is not None:
            LOGGER.info("group report -> %s", report)
    return summary
