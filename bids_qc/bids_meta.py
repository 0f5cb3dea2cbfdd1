"""Scanner and site of each scan, read from the BIDS dataset at participant level (as MRIQC's
``bids_meta``), so that the group level and its report read no input-dataset file.

Each record gets ``bids_meta``: ``{"Manufacturer", "ManufacturersModelName",
"MagneticFieldStrength", "site"}`` (``None`` where the dataset does not say). The scanner fields
come from the image's JSON sidecars by the BIDS inheritance principle, the site from the
``site`` column of ``participants.tsv``.

The layout is indexed without pybids' metadata index (:func:`bids_qc.bids_io.build_layout`: one
sidecar that is not valid JSON would make the whole dataset unreadable). The sidecars that apply
to a scan are found in that index (pybids' file names and entities; the scan's folder and its
parents, as pybids' own metadata index and ``get_nearest`` walk them) and read one by one: a broken
one is a warning and the fields it would give are missing; the scan is assessed all the same.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: Sidecar fields kept in the record (units as BIDS: MagneticFieldStrength in tesla).
SCANNER_KEYS = ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength")
BIDS_META_KEYS = (*SCANNER_KEYS, "site")
_NOT_MATCHED = {"suffix", "extension", "datatype"}


def _applies(sidecar_entities: dict, scan_entities: dict) -> bool:
    """A sidecar applies when each of its entities is one of the scan's with the same value."""
    return all(scan_entities.get(k) == v for k, v in sidecar_entities.items()
               if k not in _NOT_MATCHED)


def sidecar_index(layout, suffix: str = "T1w") -> dict:
    """``{folder: [(entities, path), ...]}`` of every indexed ``<...>_<suffix>.json`` of
    ``layout`` (one pybids query for all scans)."""
    index: dict = {}
    for sidecar in layout.get(return_type="object", suffix=suffix, extension=".json"):
        index.setdefault(Path(sidecar.path).parent, []).append(
            (sidecar.get_entities(), Path(sidecar.path)))
    return index


def sidecar_metadata(layout, path, index: dict | None = None) -> dict:
    """The JSON sidecar fields of the image ``path`` (absolute, indexed in ``layout``), by the
    BIDS inheritance principle: sidecars of the same suffix in the image's folder and its parents
    (up to the dataset root) whose entities the image has; nearer folders override farther ones,
    and within a folder a sidecar with more entities overrides one with fewer. Unreadable
    sidecars are skipped (warning). ``index``: :func:`sidecar_index` of the scan's suffix.
    """
    scan = layout.get_file(str(path))
    if scan is None:
        return {}
    entities = scan.get_entities()
    if index is None:
        index = sidecar_index(layout, entities.get("suffix"))
    root, folder = Path(layout.root), Path(path).parent
    chain = []  # nearest folder first
    while True:
        found = [(e, p) for e, p in index.get(folder, []) if _applies(e, entities)]
        chain.extend(p for _, p in sorted(found, key=lambda f: -len(f[0])))
        if folder == root or folder == folder.parent:
            break
        folder = folder.parent
    meta: dict = {}
    for sidecar in reversed(chain):
        try:
            content = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            LOGGER.warning("cannot read the sidecar %s (its fields are left out): %s", sidecar, exc)
            continue
        if isinstance(content, dict):
            meta.update(content)
        else:
            LOGGER.warning("the sidecar %s is not a JSON object; left out", sidecar)
    return meta


def participant_sites(bids_dir: Path) -> dict:
    """``participant_id`` -> site from ``participants.tsv`` (column ``site``), or ``{}`` when
    there is none; an unreadable file is a warning."""
    import pandas as pd

    tsv = Path(bids_dir) / "participants.tsv"
    if not tsv.is_file():
        return {}
    try:
        table = pd.read_csv(tsv, sep="\t", dtype=str, na_values=["n/a"], keep_default_na=False)
    except Exception as exc:  # a broken participants.tsv must not stop the run
        LOGGER.warning("cannot read %s (no sites): %s", tsv, exc)
        return {}
    if "participant_id" not in table or "site" not in table:
        return {}
    return {str(p): s for p, s in zip(table["participant_id"], table["site"], strict=False)
            if isinstance(s, str) and s}


def scan_bids_meta(layout, path, subject: str, sites: dict, index: dict | None = None) -> dict:
    """``{"Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "site"}`` of one scan
    (``None`` where unknown); ``sites`` from :func:`participant_sites`, ``index`` from
    :func:`sidecar_index`. Never raises."""
    try:
        meta = sidecar_metadata(layout, path, index)
    except Exception as exc:  # metadata must never cost the scan its assessment
        LOGGER.warning("%s: cannot read its sidecars: %s", path, exc)
        meta = {}
    out = {key: meta.get(key) for key in SCANNER_KEYS}
    out["site"] = sites.get(f"sub-{subject}")
    return out


def add_bids_meta(layout, scans: list) -> list:
    """``scans`` (:class:`bids_qc.bids_io.ScanSpec`) with ``bids_meta`` set, order kept; scans
    with a ``problem`` (not indexed, not assessed) get none."""
    from dataclasses import replace

    sites = participant_sites(Path(layout.root))
    try:
        index = sidecar_index(layout)  # the scans are T1w (bids_io.T1W_QUERY)
    except Exception as exc:  # metadata must never cost the scans their assessment
        LOGGER.warning("cannot list the T1w sidecars: %s", exc)
        index = {}
    return [scan if scan.problem else
            replace(scan, bids_meta=scan_bids_meta(layout, scan.path,
                                                   scan.entities.get("subject", ""), sites, index))
            for scan in scans]
