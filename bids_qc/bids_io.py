"""BIDS input: find the T1w scans to assess (pybids queries and nothing else).

The input dataset is read only: the pybids index lives in memory (no database file), so
nothing is ever written under ``bids_dir``.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bids_qc.exceptions import BidsInputError
from bids_qc.outputs import scan_folder

LOGGER = logging.getLogger(__name__)

#: Entities reported for every scan, in BIDS file-name order (others found are appended).
ENTITY_ORDER = (
    "subject", "session", "task", "acquisition", "ceagent", "reconstruction", "run",
    "echo", "flip", "inversion", "mtransfer", "part", "chunk",
)
#: The base pybids query; ``--bids-filter-file`` ``{"t1w": {...}}`` updates it.
T1W_QUERY = {"datatype": "anat", "suffix": "T1w", "extension": [".nii", ".nii.gz"]}
_NOT_ENTITIES = {"datatype", "suffix", "extension", "extra_entities"}

# Folders never indexed: derivatives and sourcedata hold no raw input; dot-folders are
# hidden; datatype folders other than anat/ only cost indexing time (files beside them, e.g.
# the subject-level sidecar sub-X/sub-X_T1w.json, have a dot in their name and are kept).
# Names that are not valid UTF-8 (surrogate-escaped by Python) cannot be stored by pybids'
# SQLite index: they are left out here and reported by :func:`invalid_name_scans`.
_IGNORE = [
    "code", "stimuli", "sourcedata", "models", "derivatives",
    re.compile(r"/\."),
    re.compile(r"^/sub-[^/]+/(?:ses-[^/]+/)?(?!anat(?:/|$))(?!ses-)[^/.]+(?:/|$)"),
    re.compile("[\udc80-\udcff]"),
]
#: Why a T1w-looking file that pybids left out gets an error record instead of an assessment.
INVALID_NAME = ("not a valid BIDS file name, so it was not assessed (rename it, e.g. "
                "sub-<label>[_ses-<label>][_acq-<label>][_run-<index>]_T1w.nii.gz with "
                "letters and digits only in the labels, or run with --skip-bids-validation)")
NON_UTF8_NAME = ("not a valid BIDS file name (bytes that are not UTF-8 text), so it was not "
                 "assessed; rename it with letters and digits only in the labels")


class BidsValidationFailure(BidsInputError):
    """``bids_dir`` is not a valid BIDS dataset (pybids validation)."""


class NoScansFound(BidsInputError):
    """No T1w scan matched the selection."""


@dataclass(frozen=True)
class ScanSpec:
    """One T1w scan to assess.

    ``path`` is absolute; ``source_file`` is relative to ``bids_dir`` (POSIX separators);
    ``bids_name`` is the file name without ``.nii``/``.nii.gz``; ``entities`` maps entity
    names (``subject``, ``session``, ``run``, ...) to their labels as written in the name.
    ``source_file`` and ``bids_name`` are printable text: bytes of a name that are not valid
    UTF-8 appear as ``\\xe9`` (see :func:`display_name`); ``path`` is the real path.
    ``problem``: when not empty, why the scan cannot be assessed at all (e.g. an invalid
    BIDS name); the scan then gets an error record with this reason.
    ``bids_meta``: scanner and site from the dataset (:mod:`bids_qc.bids_meta`), ``None`` until
    read.
    """

    path: Path
    source_file: str
    bids_name: str
    entities: dict = field(default_factory=dict)
    problem: str = ""
    bids_meta: dict | None = None

    @property
    def subdir(self) -> Path:
        """``sub-X[/ses-Y]/anat``: where this scan's derivatives go, the scan's own folder
        (so that two input files never share outputs, even with labels pybids cuts short)."""
        folder = Path(self.source_file).parent
        if folder.parts and folder.parts[0].startswith("sub-") and folder.name == "anat":
            return folder
        return scan_folder(self.entities)


def display_name(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name shown as ``\\xNN`` escapes.

    Python decodes such names with surrogate escapes, which cannot be written as UTF-8
    (JSON, TSV, HTML); valid text is returned unchanged.
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strip_nifti_ext(name: str) -> str:
    """``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``."""
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def load_bids_filters(path: Path | None) -> dict:
    """Read an fMRIPrep-style filter file ``{"t1w": {entity: value}}``.

    Returns the ``t1w`` entry (a dict, possibly empty). Raises :class:`BidsInputError`
    when the file is missing, not JSON, or not of that shape.
    """
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BidsInputError(f"--bids-filter-file {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BidsInputError(f"--bids-filter-file {path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("t1w", {}), dict):
        raise BidsInputError(
            f'--bids-filter-file {path}: expected {{"t1w": {{"entity": value, ...}}}}'
        )
    unused = sorted(set(data) - {"t1w"})
    if unused:
        LOGGER.warning("--bids-filter-file: ignoring keys %s (bids_qc only uses 't1w')", unused)
    return dict(data.get("t1w", {}))


def _to_query_value(value):
    """JSON null -> entity absent, ``"*"`` -> any value (pybids ``Query``)."""
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, list):
        return [_to_query_value(v) for v in value]
    return value


class DerivativeFileNames:
    """The file-name check of a BIDS *derivative* dataset, for pybids' indexer: the BIDS schema's
    common, raw and derivative rules, so that e.g.
    ``sub-01/anat/sub-01_space-MNI152NLin2009aSym_desc-motionsevere_T1w.nii.gz`` (the output of
    ``bids-qc-simulate``) is a valid T1w. pybids' own validator knows the raw rules only."""

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _regexes() -> tuple:
        from bidsschematools import rules, schema

        bids = schema.load_schema()
        groups = (bids.rules.files.common, bids.rules.files.raw, bids.rules.files.deriv)
        return tuple(re.compile(rule["regex"]) for group in groups
                     for rule in rules.regexify_filename_rules(group, bids, level=2))

    def is_bids(self, path: str) -> bool:
        """``path``: relative to the dataset root, with a leading ``/``."""
        return any(regex.match(path.lstrip("/")) for regex in self._regexes())


def is_derivative_dataset(bids_dir: Path) -> bool:
    """Whether ``bids_dir/dataset_description.json`` says ``"DatasetType": "derivative"``."""
    try:
        description = json.loads((Path(bids_dir) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(description, dict) and description.get("DatasetType") == "derivative"


def build_layout(bids_dir: Path, *, validate: bool = True):
    """Index ``bids_dir`` in memory (derivatives/, sourcedata/ and non-anat folders skipped).

    Raises :class:`BidsValidationFailure` when ``validate`` and the dataset fails pybids'
    validation (e.g. no ``dataset_description.json`` or no ``BIDSVersion`` in it). A derivative
    dataset (``DatasetType`` ``derivative``, e.g. ``bids-qc-simulate``'s output) must name its
    pipeline (``GeneratedBy``), and its file names are checked with the derivative rules
    (:class:`DerivativeFileNames`: ``space-``, ``desc-``, ... entities allowed).
    """
    from bids import BIDSLayout, BIDSLayoutIndexer
    from bids.exceptions import BIDSValidationError

    # no metadata index: one sidecar that is not valid JSON would make the whole dataset
    # unreadable; bids_qc.bids_meta reads each scan's sidecars one by one instead
    indexer = BIDSLayoutIndexer(validate=validate, ignore=_IGNORE, index_metadata=False)
    if validate and is_derivative_dataset(bids_dir):
        indexer.validator = DerivativeFileNames()
    try:
        return BIDSLayout(str(bids_dir), validate=validate, derivatives=False, indexer=indexer)
    except BIDSValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise BidsValidationFailure(
            f"{bids_dir} is not a valid BIDS dataset: {first_line} "
            "(use --skip-bids-validation to index it anyway)"
        ) from None


def _entities_of(bids_file) -> dict:
    raw = bids_file.get_entities()
    found = {k: str(v) for k, v in raw.items() if k not in _NOT_ENTITIES and v is not None}
    ordered = {k: found.pop(k) for k in ENTITY_ORDER if k in found}
    ordered.update(sorted(found.items()))
    return ordered


def _folder_labels(rel: Path) -> dict:
    """``{"subject": ..., ["session": ...]}`` as written in the folders of ``rel``
    (``sub-X/[ses-Y/]anat/name``), or ``{}`` for a file outside ``sub-*/``."""
    if len(rel.parts) < 3 or not rel.parts[0].startswith("sub-"):
        return {}
    labels = {"subject": display_name(rel.parts[0][len("sub-"):])}
    if len(rel.parts) == 4 and rel.parts[1].startswith("ses-"):
        labels["session"] = display_name(rel.parts[1][len("ses-"):])
    return labels


def _use_folder_labels(entities: dict, rel: Path) -> dict:
    """``entities`` with subject and session as the folders name them (logged when pybids read
    them otherwise: a label with a space or an accent, e.g. ``sub-IXI 02`` or ``sub-IXIé01``, is
    cut to ``IXI`` by pybids, and two scans would then share a subject and an output folder)."""
    labels = _folder_labels(rel)
    changed = {k: (entities.get(k), v) for k, v in labels.items() if entities.get(k) != v}
    if changed:
        LOGGER.warning("%s: %s not a valid BIDS label (letters and digits only); pybids read %s, "
                       "the outputs use the folder name", display_name(rel.as_posix()),
                       ", ".join(f"{k} label {new!r}" for k, (_, new) in changed.items())
                       + (" is" if len(changed) == 1 else " are"),
                       ", ".join(f"{old!r}" for old, _ in changed.values()))
        entities = {**entities, **labels}
        return {k: entities.pop(k) for k in ENTITY_ORDER if k in entities} | entities
    return entities


def _drop_duplicate_names(scans: list[ScanSpec]) -> list[ScanSpec]:
    """Keep one of ``x_T1w.nii`` / ``x_T1w.nii.gz`` (same outputs); prefer ``.nii.gz``."""
    chosen: dict[tuple, ScanSpec] = {}
    for scan in scans:
        key = (scan.subdir, scan.bids_name)
        if key in chosen:
            keep = scan if scan.path.name.endswith(".nii.gz") else chosen[key]
            LOGGER.warning("%s exists as .nii and .nii.gz; using %s", scan.bids_name,
                           keep.source_file)
            chosen[key] = keep
        else:
            chosen[key] = scan
    return list(chosen.values())


def find_t1w(
    layout,
    *,
    participant_label=(),
    session_id=(),
    filters: dict | None = None,
    without_subject: list | None = None,
) -> list[ScanSpec]:
    """All T1w scans of ``layout`` matching the selection, sorted by path.

    ``participant_label`` / ``session_id``: labels without prefix (empty = all).
    ``filters``: pybids entities that update :data:`T1W_QUERY` (``None`` = entity absent,
    ``"*"`` = any value). Raises :class:`NoScansFound` when nothing matches.
    Subject and session labels are those of the scan's folders (see :func:`_use_folder_labels`).
    ``without_subject``: if a list, the ``source_file`` of every T1w file that has no subject
    (outside any ``sub-*`` folder: it cannot be assessed) is appended to it; they are logged
    as errors either way.
    """
    query = dict(T1W_QUERY)
    for key, value in (filters or {}).items():
        query[key] = _to_query_value(value)
    if participant_label:
        missing = sorted(set(participant_label) - set(layout.get_subjects()))
        if missing:
            LOGGER.warning("participant labels not in the dataset: %s", ", ".join(missing))
        query["subject"] = list(participant_label)
    if session_id:
        query["session"] = list(session_id)
    try:
        files = layout.get(return_type="object", **query)
    except (ValueError, TypeError) as exc:  # e.g. an unknown entity in the filter file
        raise BidsInputError(f"invalid BIDS query {query}: {exc}") from None

    root = Path(layout.root)
    scans = []
    for bids_file in files:
        path = Path(bids_file.path)
        rel = path.relative_to(root)
        entities = _use_folder_labels(_entities_of(bids_file), rel)
        if "subject" not in entities:
            LOGGER.error("%s: a T1w file without a subject (not in a sub-<label>/ folder): it "
                         "cannot be assessed and gets no outputs; move it to "
                         "sub-<label>/anat/", display_name(rel.as_posix()))
            if without_subject is not None:
                without_subject.append(display_name(rel.as_posix()))
            continue
        scans.append(
            ScanSpec(
                path=path,
                source_file=path.relative_to(root).as_posix(),
                bids_name=strip_nifti_ext(path.name),
                entities=entities,
            )
        )
    scans.sort(key=lambda s: s.source_file)
    scans = _drop_duplicate_names(scans)
    if participant_label:  # the folder labels decide (pybids may have read a shorter one)
        scans = [s for s in scans if s.entities["subject"] in participant_label]
    if not scans:
        selection = {k: v for k, v in query.items() if k not in T1W_QUERY or k == "extension"}
        raise NoScansFound(
            f"no T1w scan in {root} matched the selection "
            f"(subjects in the dataset: {', '.join(layout.get_subjects()) or 'none'}; "
            f"query: {selection})"
        )
    n_subjects = len({s.entities["subject"] for s in scans})
    LOGGER.info("found %d T1w scan(s) from %d subject(s) in %s", len(scans), n_subjects, root)
    return scans


def refuse_shared_outputs(scans: list[ScanSpec]) -> list[ScanSpec]:
    """No two scans may write the same outputs: a scan whose output folder and name equal an
    earlier one's (which folder labels and the ``.nii``/``.nii.gz`` rule normally prevent, but
    e.g. a name holding the text ``\\xe9`` and one holding the byte 0xe9 are shown alike) is not
    assessed; it gets an error record naming both files, under a distinct name
    (``<bids_name>_dup<n>``). Order is kept."""
    from dataclasses import replace

    taken: dict[tuple, ScanSpec] = {}
    out = []
    for scan in scans:
        key = (scan.subdir.as_posix(), scan.bids_name)
        first = taken.get(key)
        if first is not None:
            n = 2
            while (key[0], f"{scan.bids_name}_dup{n}") in taken:
                n += 1
            name = f"{scan.bids_name}_dup{n}"
            reason = (f"would write the same outputs as {first.source_file} "
                      f"({key[0]}/{first.bids_name}_qc.json), so it was not assessed; its record "
                      f"is {name}_qc.json; rename one of the two files")
            LOGGER.error("%s: %s", scan.source_file, reason)
            scan = replace(scan, bids_name=name, problem=reason)
            key = (key[0], name)
        taken[key] = scan
        out.append(scan)
    return out


def unindexed_t1w(layout) -> list[str]:
    """T1w-looking files under ``sub-*/`` that the index left out (e.g. non-BIDS names).

    pybids' validation drops such files silently; the CLI logs them so users see why a file
    was not processed. Returns paths relative to the dataset root (:func:`display_name`
    text), sorted.
    """
    root = Path(layout.root)
    return sorted(display_name(p.relative_to(root).as_posix()) for p in _unindexed_paths(layout))


def _unindexed_paths(layout) -> list[Path]:
    root = Path(layout.root)
    indexed = {Path(f).resolve() for f in layout.get(return_type="filename", **T1W_QUERY)}
    found = []
    for pattern in ("sub-*/anat/*T1w.nii*", "sub-*/ses-*/anat/*T1w.nii*"):
        for path in root.glob(pattern):
            if (path.name.endswith((".nii", ".nii.gz")) and path.resolve() not in indexed
                    and (path.name.startswith("T1w.") or "_T1w." in path.name)):
                found.append(path)
    return sorted(found)


def invalid_name_scans(layout, *, participant_label=(), session_id=()) -> list[ScanSpec]:
    """T1w-looking files the index left out, as scans to report as errors (:data:`INVALID_NAME`,
    :data:`NON_UTF8_NAME`).

    A file ``sub-<X>/[ses-<Y>/]anat/*_T1w.nii[.gz]`` whose name pybids rejected (or could
    not store) would otherwise be silently missing from the results. Subject and session
    come from the folder names; the selection by ``participant_label`` / ``session_id``
    applies. Sorted by ``source_file``.
    """
    root = Path(layout.root)
    scans = []
    for path in _unindexed_paths(layout):
        rel = path.relative_to(root)
        entities = {"subject": display_name(rel.parts[0][len("sub-"):])}
        if len(rel.parts) == 4:
            entities["session"] = display_name(rel.parts[1][len("ses-"):])
        if participant_label and entities["subject"] not in participant_label:
            continue
        if session_id and entities.get("session") not in session_id:
            continue
        source_file = display_name(rel.as_posix())
        problem = INVALID_NAME if source_file == rel.as_posix() else NON_UTF8_NAME
        scans.append(ScanSpec(path=path, source_file=source_file,
                              bids_name=display_name(strip_nifti_ext(path.name)),
                              entities=entities, problem=problem))
    return sorted(scans, key=lambda s: s.source_file)
