"""Site and scanner of each scan for the group report's breakdowns.

The participant level records them (``bids_meta``, :mod:`bids_qc.bids_meta`) and the group
table carries them (``site``, ``manufacturer``, ``manufacturers_model_name``,
``magnetic_field_strength``). Only for rows without any of them (records written before bids_qc
captured them) are they looked up here, as before: sites from the source dataset's
``participants.tsv``, scanners from the images' JSON sidecars (BIDS inheritance principle).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from bids_qc.bids_meta import participant_sites
from bids_qc.reports.formatting import bids_stem, entity_label, fmt, is_missing

logger = logging.getLogger(__name__)

SCANNER_KEYS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength")


def _bids_root(source_file: str) -> Path | None:
    """Nearest parent of an absolute ``source_file`` holding dataset_description.json, or None."""
    try:
        folder = Path(source_file).resolve().parent
    except (OSError, RuntimeError):
        return None
    for candidate in [folder, *folder.parents][:6]:
        if (candidate / "dataset_description.json").is_file():
            return candidate
    return None


def source_datasets(out_dir: Path) -> list[Path]:
    """Local source dataset folders named in ``out_dir/dataset_description.json``
    (``SourceDatasets[].URL`` of the form ``file:///...``)."""
    from urllib.parse import unquote, urlparse

    try:
        desc = json.loads((Path(out_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return []
    roots = []
    for entry in desc.get("SourceDatasets") or []:
        url = str((entry or {}).get("URL") or "")
        if url.startswith("file://"):
            path = Path(unquote(urlparse(url).path))
            if path.is_dir():
                roots.append(path)
    return roots


def _sidecar_metadata(source_file: str, root: Path) -> dict:
    """JSON sidecar fields for one image, following the BIDS inheritance principle."""
    path = Path(source_file)
    stem = bids_stem(path)
    parts = stem.split("_")
    suffix, entities = parts[-1], set(parts[:-1])
    try:
        rel_dirs = path.resolve().parent.relative_to(root).parts
    except (ValueError, OSError):
        return {}
    meta, folder = {}, root
    for level in range(len(rel_dirs) + 1):
        if level:
            folder = folder / rel_dirs[level - 1]
        candidates = []
        for js in folder.glob(f"*{suffix}.json"):
            jparts = js.name[: -len(".json")].split("_")
            if jparts[-1] == suffix and set(jparts[:-1]) <= entities:
                candidates.append((len(jparts), js))
        for _, js in sorted(candidates):
            try:
                meta.update(json.loads(js.read_text()))
            except (OSError, ValueError):
                logger.warning("cannot read sidecar %s", js)
    return meta


def _scanner_label(meta: dict) -> str | None:
    parts = [str(meta[k]) for k in SCANNER_KEYS[:2] if meta.get(k)]
    if meta.get("MagneticFieldStrength"):
        parts.append(f"{fmt(meta['MagneticFieldStrength'])} T")
    return " ".join(parts) or None


#: Group-table columns written from the records' ``bids_meta`` -> sidecar field.
RECORD_COLUMNS = {"manufacturer": "Manufacturer", "manufacturers_model_name": "ManufacturersModelName",
                  "magnetic_field_strength": "MagneticFieldStrength"}


def _from_record(row: dict) -> tuple | None:
    """``(site, scanner)`` from a row's record columns, or None when the record has none."""
    meta = {key: row[col] for col, key in RECORD_COLUMNS.items() if not is_missing(row.get(col))}
    site = None if is_missing(row.get("site")) else str(row["site"])
    return (site, _scanner_label(meta)) if meta or site is not None else None


def add_site_scanner(df, out_dir: Path):
    """Add ``site`` and ``scanner`` columns when found: from the table's record columns, else
    (older records) from participants.tsv and the JSON sidecars. Values already in ``site`` or
    ``scanner`` columns win.

    ``source_file`` may be absolute, or relative to a source dataset named in the
    derivatives' dataset_description.json (as the BIDS-App writes it).
    """
    sources = source_datasets(out_dir) if "source_file" in df else []
    roots: dict[str, tuple[Path | None, str]] = {}
    sites, scanners = [], []
    site_maps: dict[Path, dict] = {}
    for row in df.to_dict("records"):
        recorded = _from_record(row)
        if recorded is not None or "source_file" not in df:
            sites.append(recorded and recorded[0])
            scanners.append(recorded and recorded[1])
            continue
        src, subj = row["source_file"], row.get("subject")
        src = "" if is_missing(src) else str(src)
        if src not in roots:
            if src and Path(src).is_absolute():
                roots[src] = (_bids_root(src), src)
            else:
                found = [r for r in sources if (r / src).exists()] or sources
                roots[src] = (found[0], str(found[0] / src)) if (found and src) else (None, src)
        root, full = roots[src]
        if root is None:
            sites.append(None)
            scanners.append(None)
            continue
        if root not in site_maps:
            site_maps[root] = participant_sites(root)
        sites.append(site_maps[root].get(f"sub-{entity_label(subj)}"))
        scanners.append(_scanner_label(_sidecar_metadata(full, root)))
    for column, found in (("site", sites), ("scanner", scanners)):
        if any(s is not None for s in found):
            kept = list(df[column]) if column in df else [None] * len(df)
            df[column] = [v if not is_missing(v) else f for v, f in zip(kept, found, strict=True)]
    return df
