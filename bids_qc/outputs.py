"""Derivative outputs: paths, atomic writes, dataset_description.json, run markers, reading the
records and writing the group table (built by :mod:`bids_qc.group_table`).

Every file is written to a temporary name in its final folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written output: a ``_qc.json``
either exists complete or not at all (which is what resuming relies on).

Temporary names are unique per process and write (``.<name>.<host>-<pid>-<random>.tmp<ext>``),
so two runs on the same scan never write, move or delete each other's temporaries: cleanup
(:func:`remove_stale_temporaries`) deletes only those of this process or of a process that no
longer runs on this host (a killed run).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path

from bids_qc import __version__
from bids_qc.record import json_safe

LOGGER = logging.getLogger(__name__)

GROUP_TSV = "group_T1w.tsv"
GROUP_SUMMARY = "group_summary.json"
GROUP_REPORT = "group_report.html"

# --------------------------------------------------------------------------- atomic writes
#: Temporaries older than this (s) are stale even when written by another host (whose
#: processes cannot be checked from here); every write takes seconds at most.
FOREIGN_TEMPORARY_AGE_S = 3600.0
_TEMPORARY = re.compile(r"\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp(\.[A-Za-z.]+)?$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _extension(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def temporary_path(path: Path) -> Path:
    """A new, unique hidden name beside ``path``: ``.<name>.<host>-<pid>-<random>.tmp<ext>``
    (``ext`` = ``.json``, ``.html``, ``.nii.gz``: writers that check the extension work)."""
    path = Path(path)
    token = f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{token}.tmp{_extension(path)}")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def is_stale_temporary(entry: Path) -> bool:
    """True for a temporary (:func:`temporary_path`) that no running writer owns: one of this
    process, of a process of this host that has ended, or older than
    :data:`FOREIGN_TEMPORARY_AGE_S` from another host; and for the older formats (random
    names without a process id)."""
    match = _TEMPORARY.search(entry.name)
    if match is None:
        return True
    pid = int(match["pid"])
    if match["host"] == _host():
        return pid == os.getpid() or not _pid_running(pid)
    try:
        return time.time() - entry.stat().st_mtime > FOREIGN_TEMPORARY_AGE_S
    except OSError:
        return False


def remove_stale_temporaries(paths) -> list[Path]:
    """Delete the hidden temporaries of the outputs ``paths`` (any iterable of paths) that a
    killed run left, never those another running process is writing (:func:`is_stale_temporary`).
    Returns the paths deleted."""
    removed = []
    for path in map(Path, paths):
        prefixes = (f".{path.name}.", f".{path.stem}.")
        with contextlib.suppress(OSError):
            for entry in os.scandir(path.parent):
                if (entry.name.startswith(prefixes) and ".tmp" in entry.name
                        and is_stale_temporary(Path(entry.path))):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    The temporary name (:func:`temporary_path`) is unique to this process and write, keeps the
    extension (``.json``, ``.html``, ``.nii.gz``) so writers that check it work, and starts with
    a dot so partial files are hidden. On any error (a full disk too) it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
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
def derivative_path(folder: Path, source_name: str, extension: str, *, entities=(),
                    suffix: str | None = None) -> Path:
    """The one way derivative files of a scan are named (bids_qc's outputs, the model inputs,
    ``bids-qc-simulate``'s images): ``folder/<name><extension>``, where ``name`` is the scan's
    BIDS name without extension (``source_name``, e.g. ``sub-01_ses-1_T1w``) with ``entities``
    (``(key, label)`` pairs, in the order given) inserted before its suffix and ``suffix``, if
    any, appended after it::

        derivative_path(d, "sub-01_T1w", ".json", suffix="qc")   # d/sub-01_T1w_qc.json
        derivative_path(d, "sub-01_T1w", ".nii.gz", entities=[("space", "MNI152NLin2009aSym"),
                        ("desc", "preproc")])   # d/sub-01_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz
    """
    name = source_name
    if entities:
        stem, _, own_suffix = source_name.rpartition("_")
        name = stem + "".join(f"_{key}-{label}" for key, label in entities) + f"_{own_suffix}"
    if suffix:
        name += f"_{suffix}"
    return Path(folder) / f"{name}{extension}"


def scan_folder(entities: dict) -> Path:
    """``sub-<subject>[/ses-<session>]/anat``: the derivative folder of a scan with these BIDS
    ``entities`` (relative to the output folder)."""
    parts = [f"sub-{entities['subject']}"]
    if entities.get("session"):
        parts.append(f"ses-{entities['session']}")
    return Path(*parts, "anat")


def scan_output_paths(output_dir: Path, subdir: Path, bids_name: str) -> dict[str, Path]:
    """``{"json": .../<bids_name>_qc.json, "html": .../<bids_name>_qc.html}`` in
    ``output_dir/subdir`` (:func:`derivative_path`)."""
    folder = Path(output_dir) / subdir
    return {kind: derivative_path(folder, bids_name, f".{kind}", suffix="qc")
            for kind in ("json", "html")}


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


# --------------------------------------------------------------------------- runs in progress
#: A participant run lists the scans it is writing in ``<output_dir>/<prefix><host>-<pid>-<random>.json``
#: while it runs, so that a group run at the same time can say which scans are incomplete.
RUN_MARKER_PREFIX = ".bids_qc_participant_run."


def start_run_marker(output_dir: Path, scans) -> Path:
    """Write the marker of a participant run about to write ``scans`` (``(source_file, json
    path)`` pairs); remove it with ``Path.unlink`` when the run ends. Markers of ended runs of
    this host (killed) are deleted first."""
    output_dir = Path(output_dir)
    for path in _run_markers(output_dir):
        marker = read_record(path)
        if marker is not None and _run_state(marker) == "interrupted":
            with contextlib.suppress(OSError):
                path.unlink()
    started = time.time()
    marker = {"host": _host(), "pid": os.getpid(), "started": started,
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "scans": [{"source_file": source, "qc_json": Path(json_path).relative_to(
                  output_dir).as_posix()} for source, json_path in scans]}
    path = output_dir / f"{RUN_MARKER_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}.json"
    return atomic_write_json(path, marker)


def _run_markers(output_dir: Path) -> list[Path]:
    return sorted(p for p in Path(output_dir).glob(f"{RUN_MARKER_PREFIX}*.json")
                  if ".tmp" not in p.name)


def _run_state(marker: dict) -> str:
    if marker.get("host") != _host():
        return f"on host {marker.get('host')}"
    return "running" if _pid_running(int(marker.get("pid") or 0)) else "interrupted"


def incomplete_scans(output_dir: Path) -> list[dict]:
    """Scans that a participant run (running, or killed before it ended) was to write and whose
    ``_qc.json`` is missing or older than that run: ``{"source_file", "qc_json", "run": state,
    "pid", "started_utc", "reason"}``, sorted by ``qc_json``."""
    output_dir = Path(output_dir)
    found = {}
    for path in _run_markers(output_dir):
        marker = read_record(path)
        if marker is None:
            continue
        state = _run_state(marker)
        for scan in marker.get("scans") or []:
            json_path = output_dir / str(scan.get("qc_json"))
            try:
                older = json_path.stat().st_mtime < float(marker.get("started") or 0)
                reason = "its record predates this run (being redone)" if older else ""
            except OSError:
                reason = "no record yet"
            if reason:
                found[scan.get("qc_json")] = {
                    "source_file": scan.get("source_file"), "qc_json": scan.get("qc_json"),
                    "run": state, "pid": marker.get("pid"),
                    "started_utc": marker.get("started_utc"), "reason": reason}
    return [found[k] for k in sorted(found)]


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


def write_table(path: Path, table) -> Path:
    """Write ``table`` as a BIDS TSV (tab separated, missing values as ``n/a``)."""
    return atomic_write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))
