"""Reading and validating a site's ratings (the annotations the group level fine-tunes on).

Format (TSV, the report's rating widget exports exactly this)::

    bids_name  participant_id  session  run  motion  noise  contrast  tier_override  comment

``bids_name`` is the input file name without ``.nii``/``.nii.gz`` (``sub-01_ses-1_T1w``);
session/run may be ``n/a``; grades are 0, 1, 2 or ``n/a`` (not rated). A plain TSV is accepted too:
``filename`` (or ``participant_id`` [+ ``session``, ``run``]) plus the three grade columns.
Errors name the file and the 1-based data row.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bids_qc.exceptions import AnnotationError
from bids_qc.record import ARTEFACTS

NA = {"", "n/a", "na", "nan", "none"}


def _norm(value) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in NA else text


def _strip_prefix(value: str | None, prefix: str) -> str | None:
    if value is None:
        return None
    return value[len(prefix):] if value.startswith(prefix) else value


def _grade(path, row: int, column: str, value) -> int | None:
    text = _norm(value)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is None or number not in (0, 1, 2):
        raise AnnotationError(path, f"column {column!r} must be 0, 1, 2 or n/a, got {text!r}", row)
    return int(number)


def read_annotations(path, table: pd.DataFrame) -> pd.DataFrame:
    """Validate ``path`` against the group ``table`` (one row per scan, with ``bids_name``,
    ``subject``, ``session``, ``run``). Returns one row per rated scan: ``bids_name`` plus the
    three grades (nullable ints), ``tier_override`` and ``comment``."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise AnnotationError(path, "file not found") from exc
    except Exception as exc:
        raise AnnotationError(path, f"not a readable TSV: {exc}") from exc
    missing = [a for a in ARTEFACTS if a not in raw.columns]
    if missing:
        raise AnnotationError(path, f"missing grade column(s) {missing}; expected columns "
                              "bids_name, participant_id, session, run, motion, noise, contrast")
    keys = [c for c in ("bids_name", "filename", "participant_id") if c in raw.columns]
    if not keys:
        raise AnnotationError(path, "needs a 'bids_name', 'filename' or 'participant_id' column")
    names = set(table["bids_name"])
    rows, seen = [], {}
    for i, rec in enumerate(raw.to_dict("records"), start=1):
        name = _norm(rec.get("bids_name"))
        if name is None and _norm(rec.get("filename")):
            name = Path(_norm(rec["filename"])).name.split(".nii")[0]
        if name is None:
            sub = _strip_prefix(_norm(rec.get("participant_id")), "sub-")
            ses = _strip_prefix(_norm(rec.get("session")), "ses-")
            run = _strip_prefix(_norm(rec.get("run")), "run-")
            match = table[table["subject"].astype(str) == str(sub)]
            if ses is not None and "session" in match:
                match = match[match["session"].astype(str) == ses]
            if run is not None and "run" in match:
                match = match[match["run"].astype(str).str.lstrip("0") == run.lstrip("0")]
            if len(match) != 1:
                what = "no scan" if len(match) == 0 else f"{len(match)} scans (add session/run)"
                raise AnnotationError(path, f"participant sub-{sub} matches {what}", i)
            name = match["bids_name"].iloc[0]
        if name not in names:
            raise AnnotationError(path, f"unknown scan {name!r}: not in this dataset's results", i)
        if name in seen:
            raise AnnotationError(path, f"duplicate rating for {name!r} (first at row {seen[name]})", i)
        seen[name] = i
        grades = {a: _grade(path, i, a, rec.get(a)) for a in ARTEFACTS}
        tier = _norm(rec.get("tier_override"))
        if tier is not None and tier not in {"1", "2", "3"}:
            raise AnnotationError(path, f"tier_override must be 1, 2, 3 or n/a, got {tier!r}", i)
        rows.append({"bids_name": name, **grades, "tier_override": int(tier) if tier else None,
                     "comment": _norm(rec.get("comment")) or ""})
    if not rows:
        raise AnnotationError(path, "no rated scans")
    out = pd.DataFrame(rows)
    for a in ARTEFACTS:
        out[a] = out[a].astype("Int64")
    return out
