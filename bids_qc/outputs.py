"""Derivative outputs: paths, atomic writes, dataset_description.json and the group table.

Every file is written to a temporary name in its final folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written output: a ``_qc.json``
either exists complete or not at all (which is what resuming relies on).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from bids_qc import __version__
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS, json_safe

LOGGER = logging.getLogger(__name__)

GROUP_TSV = "group_T1w.tsv"
GROUP_SUMMARY = "group_summary.json"
GROUP_REPORT = "group_report.html"
#: Entity columns always present in the group table (others found are appended).
CORE_ENTITIES = (
    "subject", "session", "acquisition", "ceagent", "reconstruction", "run", "part", "chunk",
)


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix (``.json``, ``.html``) so writers that check it
    work; it starts with a dot so partial files are hidden. On error it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; create parent folders."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def to_json(obj) -> str:
    """Strict JSON text (NaN/inf -> null, numpy scalars -> Python), 2-space indent."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str) + "\n"


def atomic_write_json(path: Path, obj) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically."""
    return atomic_write_text(path, to_json(obj))


# --------------------------------------------------------------------------- paths
def scan_output_paths(output_dir: Path, subdir: Path, bids_name: str) -> dict[str, Path]:
    """``{"json": .../<bids_name>_qc.json, "html": .../<bids_name>_qc.html}``."""
    folder = Path(output_dir) / subdir
    return {"json": folder / f"{bids_name}_qc.json", "html": folder / f"{bids_name}_qc.html"}


def read_record(path: Path) -> dict | None:
    """The record in ``path``, or ``None`` if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_done(json_path: Path) -> bool:
    """True when ``json_path`` holds a complete record with status ``ok`` (resume test)."""
    record = read_record(json_path)
    return record is not None and record.get("status") == "ok"


def check_output_dir(bids_dir: Path, output_dir: Path) -> None:
    """Refuse an output folder inside ``bids_dir`` unless it is under ``bids_dir/derivatives``.

    Raises ``ValueError`` with the reason.
    """
    bids_dir = Path(bids_dir).resolve()
    output_dir = Path(output_dir).resolve()
    if output_dir == bids_dir:
        raise ValueError(f"output_dir {output_dir} is the input dataset itself")
    if output_dir.is_relative_to(bids_dir) and not output_dir.is_relative_to(
        bids_dir / "derivatives"
    ):
        raise ValueError(
            f"output_dir {output_dir} is inside the input dataset {bids_dir}; use a folder "
            f"outside it or {bids_dir / 'derivatives' / 'bids_qc'}"
        )


def write_dataset_description(output_dir: Path, bids_dir: Path) -> Path:
    """Write ``output_dir/dataset_description.json`` (BIDS derivative, GeneratedBy bids_qc)."""
    source = read_record(Path(bids_dir) / "dataset_description.json") or {}
    source_entry = {"URL": Path(bids_dir).resolve().as_uri()}
    if source.get("DatasetDOI"):
        source_entry["DOI"] = source["DatasetDOI"]
    if source.get("Name"):
        source_entry["Name"] = source["Name"]
    description = {
        "Name": f"bids_qc quality control of {source.get('Name') or Path(bids_dir).name}",
        "BIDSVersion": source.get("BIDSVersion") or "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "bids_qc",
                "Version": __version__,
                "Description": "Deep-learning QC of T1w MRI: motion, noise and contrast "
                "grades, tiers and image-quality metrics",
            }
        ],
        "SourceDatasets": [source_entry],
    }
    return atomic_write_json(Path(output_dir) / "dataset_description.json", description)


# --------------------------------------------------------------------------- group level
def collect_records(output_dir: Path) -> list[dict]:
    """Every ``*_qc.json`` under ``output_dir/sub-*/[ses-*/]anat/``, sorted by file name.

    Unreadable files are skipped with a warning. Each record gets ``qc_json``: its path
    relative to ``output_dir``.
    """
    output_dir = Path(output_dir)
    paths = sorted(
        set(output_dir.glob("sub-*/anat/*_qc.json"))
        | set(output_dir.glob("sub-*/ses-*/anat/*_qc.json"))
    )
    records = []
    for path in paths:
        record = read_record(path)
        if record is None:
            LOGGER.warning("skipping unreadable record %s", path)
            continue
        record["qc_json"] = path.relative_to(output_dir).as_posix()
        records.append(record)
    return records


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
    for metric in METRICS:
        row[metric] = metrics.get(metric)
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
    then any other), ``status, error, error_stage, tier, cannot_judge`` (why an ok scan got no
    verdict, see :mod:`bids_qc.judgeable`), ``grade_<artefact>`` x3,
    ``p_<detector>`` x6, ``slab_motion_score, slab_motion, slab_motion_threshold`` (the slab
    motion detector's probability, verdict and threshold), the metrics, ``n_warnings, model_id, model_trained, qc_json``.

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
    for column in list(CORE_ENTITIES) + extra:
        table[column] = table[column].astype("string")
    table["slab_motion"] = table["slab_motion"].astype("boolean")
    return table


def summarise(table) -> dict:
    """Counts for ``group_summary.json``: scans, ok/error, ok but cannot judge, per tier, per
    artefact grade."""
    import pandas as pd

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


def write_table(path: Path, table) -> Path:
    """Write ``table`` as a BIDS TSV (tab separated, missing values as ``n/a``)."""
    return atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))
