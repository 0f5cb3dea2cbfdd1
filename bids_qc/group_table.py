"""The group table: one row per scan flattened from the records, and the counts of
``group_summary.json``. Pure: records in, a pandas DataFrame and a dict out (reading the records
and writing the table: :mod:`bids_qc.outputs`; the columns are typed and described in
``bids_qc/data/schemas/group_table.schema.json``).
"""
from __future__ import annotations

import re

from bids_qc import __version__
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS

#: Entity columns always present in the group table (others found are appended).
CORE_ENTITIES = (
    "subject", "session", "acquisition", "ceagent", "reconstruction", "run", "part", "chunk",
)
#: Group-table columns of the record's ``bids_meta`` (scanner and site, :mod:`bids_qc.bids_meta`).
BIDS_META_COLUMNS = {"site": "site", "Manufacturer": "manufacturer",
                     "ManufacturersModelName": "manufacturers_model_name",
                     "MagneticFieldStrength": "magnetic_field_strength"}


def _one_line(text) -> str | None:
    if text is None:
        return None
    return re.sub(r"\s+", " ", str(text)).strip()


def record_to_row(record: dict) -> dict:
    """Flatten one record into a group-table row (see :func:`records_to_table`)."""
    entities = record.get("entities") or {}
    error = record.get("error") or {}
    grades = record.get("grades") or {}
    probabilities = record.get("probabilities") or {}
    metrics = record.get("metrics") or {}
    model = record.get("model") or {}
    row = {"bids_name": record.get("bids_name"), "source_file": record.get("source_file")}
    for key in CORE_ENTITIES:
        row[key] = entities.get(key)
    for key in sorted(set(entities) - set(CORE_ENTITIES)):
        row[key] = entities[key]
    bids_meta = record.get("bids_meta") or {}
    for key, column in BIDS_META_COLUMNS.items():
        row[column] = bids_meta.get(key)
    row.update(
        status=record.get("status"),
        error=_one_line(error.get("message")),
        error_stage=error.get("stage"),
        tier=record.get("tier"),
        cannot_judge=_one_line(record.get("cannot_judge")),
    )
    for artefact in ARTEFACTS:
        row[f"grade_{artefact}"] = grades.get(artefact)
    for detector in DETECTORS:
        row[f"p_{detector}"] = probabilities.get(detector)
    slab = record.get("slab_motion") or {}
    row["slab_motion_score"] = slab.get("score")
    row["slab_motion"] = slab.get("motion")
    row["slab_motion_threshold"] = slab.get("threshold")
    row["slab_motion_fused"] = slab.get("fused")
    for metric in METRICS:
        row[metric] = metrics.get(metric)
    row["measured_noise_grade"] = record.get("measured_noise_grade")
    row.update(
        n_warnings=len(record.get("warnings") or []),
        model_id=model.get("id"),
        model_trained=model.get("trained"),
        uncertainty=record.get("uncertainty"),
        needs_review=record.get("needs_review"),
        qc_json=record.get("qc_json"),
    )
    return row


def records_to_table(records: list[dict]):
    """One row per scan: ``bids_name, source_file``, entity columns (:data:`CORE_ENTITIES`
    then any other), ``site, manufacturer, manufacturers_model_name, magnetic_field_strength``
    (the record's ``bids_meta``, tesla), ``status, error, error_stage, tier, cannot_judge`` (why an ok scan got no
    verdict, see :mod:`bids_qc.judgeable`), ``grade_<artefact>`` x3,
    ``p_<detector>`` x6, ``slab_motion_score, slab_motion, slab_motion_threshold,
    slab_motion_fused`` (the slab motion detector's probability, verdict, threshold, and whether
    the verdict was read into the motion grade), the metrics, ``n_warnings, model_id, model_trained, qc_json``.

    Returns a pandas DataFrame (grades and tier as nullable integers).
    """
    import pandas as pd

    rows = [record_to_row(r) for r in records]
    base = list(record_to_row({}).keys())
    extra = sorted({c for row in rows for c in row} - set(base))
    cut = base.index(CORE_ENTITIES[-1]) + 1
    columns = base[:cut] + extra + base[cut:]
    table = pd.DataFrame(rows, columns=columns)
    for column in ["tier"] + [f"grade_{a}" for a in ARTEFACTS]:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    for column in list(CORE_ENTITIES) + extra + ["site", "manufacturer", "manufacturers_model_name"]:
        table[column] = table[column].astype("string")
    table["slab_motion"] = table["slab_motion"].astype("boolean")
    table["slab_motion_fused"] = table["slab_motion_fused"].astype("boolean")
    return table


def summarise(table) -> dict:
    """Counts for ``group_summary.json``: scans, ok/error, ok but cannot judge, per tier, per
    artefact grade, slab-motion flags (:func:`bids_qc.verdict_counts.slab_counts`)."""
    import pandas as pd

    from bids_qc.verdict_counts import slab_counts

    ok = table[table["status"] == "ok"]

    def _counts(series, values):
        counts = {str(v): int((series == v).sum()) for v in values}
        counts["n/a"] = int(series.isna().sum())
        return counts

    return {
        "n_scans": int(len(table)),
        "n_subjects": int(table["subject"].nunique()),
        "n_ok": int(len(ok)),
        "n_error": int((table["status"] == "error").sum()),
        "n_cannot_judge": int(ok["cannot_judge"].notna().sum()),
        "tiers": _counts(ok["tier"], (1, 2, 3)),
        "slab_motion": slab_counts(table),
        "grades": {a: _counts(ok[f"grade_{a}"], (0, 1, 2)) for a in ARTEFACTS},
        "errors_by_stage": {
            str(k): int(v)
            for k, v in table.loc[table["status"] == "error", "error_stage"]
            .fillna("unknown").value_counts().items()
        },
        "model_ids": sorted(str(m) for m in table["model_id"].dropna().unique()),
        "untrained_model": bool((table["model_trained"] == False).any()),  # noqa: E712
        "software": {"name": "bids_qc", "version": __version__},
        "generated": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }
