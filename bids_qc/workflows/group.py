"""Group level: gather the per-scan records into a table, a summary and a report.

The work is a few pandas operations on small JSON files, so it runs in-process without a
nipype graph (a one-node workflow would only add a work directory and pickling).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from bids_qc.group_table import records_to_table, summarise
from bids_qc.outputs import (
    GROUP_REPORT,
    GROUP_SUMMARY,
    GROUP_TSV,
    atomic_write_json,
    collect_records,
    incomplete_scans,
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


def _write_group_report(table, output_dir: Path, summary: dict) -> Path | None:
    from bids_qc.reports.group_report import write_group_report

    final = output_dir / GROUP_REPORT
    try:  # written atomically (bids_qc.outputs.atomic_write_text)
        write_group_report(table, final, output_dir, finetune=summary.get("finetuning"),
                           incomplete=summary.get("incomplete"),
                           slab_site=summary.get("slab_motion_site"))
    except Exception as exc:  # the table and summary are already written; say so and go on
        LOGGER.warning("group report failed: %s: %s", exc.__class__.__name__, exc)
        return None
    return final


def _slab_site_threshold(table, ratings) -> dict | None:
    """The site's slab motion threshold if it beats the shipped one on the ratings in
    cross-validation, else the shipped one: the choice, with both figures (None without slab
    scores)."""
    if "slab_motion_score" not in table or table["slab_motion_score"].isna().all():
        return None
    from bids_qc.training.slab.site_threshold import apply_site_threshold

    thresholds = pd.to_numeric(table.get("slab_motion_threshold"), errors="coerce").dropna()
    shipped = float(thresholds.iloc[0]) if len(thresholds) else float("nan")
    result = apply_site_threshold(table, ratings, shipped)
    LOGGER.info("slab motion threshold: %s; in use %.4g (shipped %.4g%s)", result["status"],
                result["threshold"], shipped,
                f", site candidate {result['site_threshold']:.4g}" if "site_threshold" in result else "")
    return result


def _model_inputs(config, table: pd.DataFrame, grid) -> dict:
    """Model-grid input of every ``ok`` scan in ``table``: the participant level's stored
    volume when present, else preprocessed again from the source file."""
    from bids_qc.model_inputs import load_model_input, model_input_path
    from bids_qc.preprocessing import preprocess

    out = {}
    rows = table[table["status"] == "ok"]
    for i, row in enumerate(rows.itertuples(), start=1):
        qc_json = Path(config.output_dir) / str(row.qc_json) if isinstance(row.qc_json, str) else None
        if qc_json is not None:
            stored = load_model_input(model_input_path(qc_json.parent, row.bids_name), grid)
            if stored is not None:
                out[row.bids_name] = stored
                continue
        source = Path(row.source_file)
        path = source if source.is_absolute() else Path(config.bids_dir) / source
        pre = preprocess(path, grid=grid, threads=config.omp_nthreads, with_registered=False)
        if pre.model_input is not None:
            out[row.bids_name] = pre.model_input
        LOGGER.info("[%d/%d] preprocessed %s for fine-tuning/re-scoring", i, len(rows), row.bids_name)
    return out


def new_model_folder(models_dir: Path, name: str) -> Path:
    """Create and return ``models_dir/name``, or ``name-2``, ``name-3``... when taken: a model
    folder is never overwritten (``mkdir`` claims the name, so two runs cannot share one)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = models_dir / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"{models_dir}: {name} and its numbered variants up to -999 all exist")


def _finetune(config, table: pd.DataFrame, ratings: pd.DataFrame, output_dir: Path) -> dict:
    """The I/O around :func:`bids_qc.training.finetune_group.finetune_on_ratings`: load the parent model
    and the scans' model inputs and, when a detector was tuned, save a new folder
    ``models/<parent>-finetuned-<date>[-N]/`` (:func:`new_model_folder`), add the new columns
    (and ``model_id_ft``, the folder's model id) to ``table`` and rewrite ``group_T1w.tsv``.
    Returns the fine-tuning summary (``status`` says when nothing was tuned or written)."""
    import datetime as _dt
    import time

    from bids_qc.models import load_bundle, save_bundle
    from bids_qc.training.finetune_group import finetune_on_ratings

    t0 = time.perf_counter()
    parent = load_bundle(config.model_dir)
    inputs = _model_inputs(config, table, parent.grid)
    result = finetune_on_ratings(table, ratings, inputs, parent, annotations=str(config.annotations))
    if not result.tuned:
        LOGGER.warning("fine-tuning: %s", result.summary["status"])
        return {"parent_model": parent.model_id, **result.summary,
                "seconds": round(time.perf_counter() - t0, 1)}
    folder = new_model_folder(output_dir / "models",
                              f"{parent.model_id}-finetuned-{_dt.date.today().isoformat()}")
    save_bundle(folder, result.members, model_id=folder.name, trained=True, grid=parent.grid,
                detectors=parent.manifest.get("detectors", {}), extra=result.manifest)
    for column in result.columns:
        table[column] = result.columns[column]
    table["model_id_ft"] = pd.Series(folder.name, index=table.index, dtype="string").mask(
        table["tier_ft"].isna())
    write_table(output_dir / GROUP_TSV, table)
    summary = {"status": "fine-tuned", "model_dir": str(folder), "model_id": folder.name,
               "parent_model": parent.model_id, **result.summary,
               "seconds": round(time.perf_counter() - t0, 1)}
    LOGGER.info("fine-tuned model -> %s (%.0f s); %d scan(s) flagged for review", folder,
                summary["seconds"], summary["n_needs_review"])
    return summary


def _use_ratings(config, table, summary: dict, output_dir: Path) -> None:
    """``--annotations``: the slab motion threshold of this site, then (if any scan has a tier:
    slabs alone give the registered detectors nothing to learn from) fine-tuning."""
    from bids_qc.annotations import read_annotations
    from bids_qc.exceptions import AnnotationError
    from bids_qc.verdict_counts import slab_counts, tier_counts

    ratings = read_annotations(config.annotations, table)
    summary["slab_motion_site"] = _slab_site_threshold(table, ratings)
    summary["slab_motion"] = slab_counts(table)  # the site's flags if its threshold was adopted
    write_table(output_dir / GROUP_TSV, table)
    atomic_write_json(output_dir / GROUP_SUMMARY, summary)
    if not table["tier"].notna().any():
        LOGGER.warning("no scan has a tier (all partial coverage or failed): the detectors are "
                       "not fine-tuned; the ratings served only the slab motion threshold choice")
        return
    LOGGER.info("fine-tuning the detectors on the ratings in %s", config.annotations)
    try:
        summary["finetuning"] = _finetune(config, table, ratings, output_dir)
    except AnnotationError:
        raise
    except ValueError as exc:  # e.g. too few usable ratings: a problem with the data given
        raise AnnotationError(config.annotations, str(exc)) from exc
    if "tier_ft" in table:  # what the app decided now: the fine-tuned model's tiers
        summary["tiers_finetuned"] = tier_counts(table, "tier_ft")
        summary["slab_motion"] = slab_counts(table)
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
        report = _write_group_report(table, output_dir, summary)
        if report is not None:
            LOGGER.info("group report -> %s", report)
    return summary
