"""The per-scan nipype interface: assess one T1w file and write its derivatives.

Thin on purpose: :func:`qc_scan` calls :func:`bids_qc.scan.assess_scan`, adds the BIDS
fields to the record and writes ``<stem>_qc.html`` (optional) then ``<stem>_qc.json``, both
atomically. The JSON is written last, so "the JSON exists with status ok" means the scan is
complete (the resume test).

Warnings about the input that the loader logs with ``extra={"scan_warning": text}`` (e.g.
NaN voxels set to 0, unknown orientation) are collected while the scan is assessed and added
to the record's ``warnings``. Text that cannot be written as UTF-8 (non-UTF-8 file names) is
escaped before anything is written.

The detector bundle is loaded once per process and kept in :data:`_BUNDLES` (keyed by the
resolved model folder). The CLI loads it before the workers start, so MultiProc workers
(forked) inherit it instead of loading it again.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")  # nipype must not phone home (no network at run time)

from nipype.interfaces.base import (  # noqa: E402
    BaseInterfaceInputSpec,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_qc.outputs import (  # noqa: E402
    atomic_write_json,
    remove_stale_temporaries,
    scan_output_paths,
)

LOGGER = logging.getLogger(__name__)

_BUNDLES: dict = {}
_SLAB_DETECTORS: dict = {}


def get_bundle(model_dir):
    """The :class:`bids_qc.models.DetectorBundle` in ``model_dir``, loaded once per process.

    Raises :class:`bids_qc.exceptions.ModelError` if the folder is unusable.
    """
    key = str(Path(model_dir).resolve())
    if key not in _BUNDLES:
        from bids_qc.models import load_bundle

        started = time.perf_counter()
        _BUNDLES[key] = load_bundle(key)
        LOGGER.debug("loaded model %s in %.1f s (pid %d)", key, time.perf_counter() - started,
                     os.getpid())
    return _BUNDLES[key]


def get_slab_detector(slab_model_dir):
    """The slab motion detector in ``slab_model_dir``, loaded once per process (``None`` if the
    argument is empty). Raises :class:`bids_qc.exceptions.ModelError` if the folder is unusable."""
    if not slab_model_dir:
        return None
    key = str(Path(slab_model_dir).resolve())
    if key not in _SLAB_DETECTORS:
        from bids_qc.slab_detector.detector import load_detector

        _SLAB_DETECTORS[key] = load_detector(key)
    return _SLAB_DETECTORS[key]


class _ScanWarnings(logging.Handler):
    """Collects the ``scan_warning`` texts logged under ``bids_qc`` while it is attached."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = getattr(record, "scan_warning", None)
        if text and text not in self.texts:
            self.texts.append(str(text))


@contextlib.contextmanager
def collect_scan_warnings():
    """``with collect_scan_warnings() as found: ...`` -> ``found.texts`` (list of str)."""
    handler = _ScanWarnings()
    logger = logging.getLogger("bids_qc")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def printable(value):
    """``value`` (nested dicts/lists) with every string made writable as UTF-8.

    Strings decoded from non-UTF-8 file names hold surrogate escapes; their bytes become
    ``\\xNN`` text (:func:`bids_qc.bids_io.display_name`).
    """
    from bids_qc.bids_io import display_name

    if isinstance(value, str):
        return display_name(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def _model_info(model_dir) -> dict:
    """``{"id", "trained", "dir"}`` of the model (``None`` values if it cannot be loaded)."""
    try:
        bundle = get_bundle(model_dir)
    except Exception:  # the CLI checked the model before; never fail a record for this
        return {"id": None, "trained": None, "dir": str(model_dir)}
    return {"id": bundle.model_id, "trained": bundle.trained, "dir": str(bundle.folder)}


def _write_report(assessment, html_path: Path) -> str | None:
    """Write the participant HTML report; returns a warning text instead of raising.

    An ``OSError`` while writing (disk full, read-only file system) is raised: it is an I/O
    failure of the run, not a problem of the report.
    """
    from bids_qc.exceptions import BidsQcError
    from bids_qc.reports.participant_report import write_participant_report

    try:  # written atomically (bids_qc.outputs.atomic_write_text)
        write_participant_report(assessment, html_path)
    except OSError as exc:
        if not isinstance(exc, BidsQcError):  # e.g. ENOSPC: the JSON would fail next
            raise
        LOGGER.warning("%s: report failed: %s", html_path.name, exc)
        return f"HTML report not written: {exc.__class__.__name__}: {exc}"
    except Exception as exc:  # a broken report must not lose the scan's results
        LOGGER.warning("%s: report failed: %s", html_path.name, exc)
        return f"HTML report not written: {exc.__class__.__name__}: {exc}"
    return None


def qc_scan(
    *,
    in_file: str,
    source_file: str,
    bids_name: str,
    entities: dict,
    output_dir: str,
    subdir: str,
    model_dir: str,
    slab_model_dir: str = "",
    omp_nthreads: int = 1,
    reports: bool = True,
    problem: str = "",
    bids_meta: dict | None = None,
) -> dict:
    """Assess ``in_file`` and write its outputs under ``output_dir/subdir``.

    ``problem``: if not empty, the scan is not assessed and gets an error record (stage
    ``bids``) with this reason (e.g. an invalid BIDS file name).
    ``bids_meta``: scanner and site read from the dataset (:mod:`bids_qc.bids_meta`), kept in
    the record as ``bids_meta`` (``None`` when empty: not read).

    Returns a summary ``{"out_json", "status", "tier", "grades", "error", "cannot_judge", "slab_motion",
    "io_error", "seconds"}``. A bad scan gives status ``error`` (never an exception); an ``OSError``
    while writing is returned in ``io_error`` (the scan's JSON may then be missing).
    """
    from bids_qc.exceptions import InvalidScanError
    from bids_qc.record import new_record, set_error
    from bids_qc.scan import ScanAssessment

    started = time.perf_counter()
    paths = scan_output_paths(Path(output_dir), Path(subdir), bids_name)
    assessment = None
    with collect_scan_warnings() as found:
        try:
            if problem:
                record = set_error(new_record(in_file), InvalidScanError(in_file, problem), "bids")
                assessment = ScanAssessment(record=record)
            else:
                from bids_qc.scan import assess_scan

                bundle = get_bundle(model_dir)
                assessment = assess_scan(in_file, bundle, omp_nthreads=omp_nthreads,
                                         want_images=reports,
                                         slab=get_slab_detector(slab_model_dir))
                record = assessment.record
        except Exception as exc:  # scan boundary: assess_scan should not raise; never lose a scan
            LOGGER.exception("%s: assessment failed", in_file)
            record = set_error(new_record(in_file), exc, "internal")
    if not record.get("model"):  # records made here (bad name, internal error) name the model too
        record["model"] = _model_info(model_dir)
    warnings = record.setdefault("warnings", [])
    warnings.extend(w for w in found.texts if w not in warnings)
    record["source_file"] = source_file
    record["bids_name"] = bids_name
    record["entities"] = dict(entities)
    record["bids_meta"] = dict(bids_meta) if bids_meta else None
    record = printable(record)
    if assessment is not None:
        assessment.record = record

    summary = {
        "out_json": str(paths["json"]),
        "status": record.get("status"),
        "tier": record.get("tier"),
        "grades": dict(record.get("grades") or {}),
        "error": (record.get("error") or {}).get("message") or "",
        "cannot_judge": record.get("cannot_judge") or "",
        "slab_motion": {k: (record.get("slab_motion") or {}).get(k) for k in ("score", "motion")},
        "io_error": "",
    }
    from bids_qc.model_inputs import model_input_path, save_model_input

    preproc = model_input_path(paths["json"].parent, bids_name)
    outputs = [paths["json"], paths["html"], preproc]
    written: list[tuple[Path, int]] = []  # (path, inode) put in place by this call
    try:
        remove_stale_temporaries(outputs)  # of killed runs only: never a running one's
        if reports and assessment is not None:
            written_at = time.perf_counter()
            warning = _write_report(assessment, paths["html"])
            if warning:
                record.setdefault("warnings", []).append(warning)
            elif paths["html"].exists():
                written.append((paths["html"], paths["html"].stat().st_ino))
            record.setdefault("timings", {})["report"] = round(time.perf_counter() - written_at, 4)
        if assessment is not None and assessment.model_input is not None:
            save_model_input(assessment.model_input, get_bundle(model_dir).grid, preproc)
            written.append((preproc, preproc.stat().st_ino))
        atomic_write_json(paths["json"], record)
    except OSError as exc:
        LOGGER.error("%s: cannot write outputs: %s", bids_name, exc)
        summary["io_error"] = f"{exc.__class__.__name__}: {exc}"
        _remove_written(written)  # no report or model input without its JSON
        remove_stale_temporaries(outputs)  # e.g. a report cut short by a full disk
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _remove_written(written) -> None:
    """Delete the outputs this call put in place (unless another run has replaced them since:
    same inode only), after the scan's JSON could not be written."""
    for path, inode in written:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:
                path.unlink()


class _AssessInputSpec(BaseInterfaceInputSpec):
    # not File(exists=True): a dangling link must reach qc_scan and get an error record
    in_file = traits.Str(mandatory=True, desc="the T1w NIfTI file")
    source_file = traits.Str(mandatory=True, desc="path relative to the BIDS root")
    bids_name = traits.Str(mandatory=True, desc="file name without .nii/.nii.gz")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the scan")
    output_dir = traits.Str(mandatory=True, desc="derivatives root")
    subdir = traits.Str(mandatory=True, desc="sub-X[/ses-Y]/anat")
    model_dir = traits.Str(mandatory=True, desc="detector model folder")
    slab_model_dir = traits.Str("", usedefault=True, desc="slab motion model folder ('' = none)")
    omp_nthreads = traits.Int(1, usedefault=True, desc="threads for this scan")
    reports = traits.Bool(True, usedefault=True, desc="write the HTML report")
    problem = traits.Str("", usedefault=True, desc="if set: do not assess, record this error")
    bids_meta = traits.Dict({}, usedefault=True, desc="scanner and site from the dataset")


class _AssessOutputSpec(TraitedSpec):
    out_json = traits.Str(desc="the scan's _qc.json")
    status = traits.Str(desc="'ok' or 'error'")
    tier = traits.Any(desc="1, 2, 3 or None")
    grades = traits.Dict(desc="artefact -> grade")
    error = traits.Str(desc="error message ('' if ok)")
    cannot_judge = traits.Str(desc="why an ok scan got no verdict ('' if it got one)")
    io_error = traits.Str(desc="error writing outputs ('' if none)")
    slab_motion = traits.Dict(desc="slab motion detector: {'score', 'motion'} (None if not run)")
    seconds = traits.Float(desc="wall time of this node (s)")


class AssessScan(SimpleInterface):
    """nipype wrapper of :func:`qc_scan` (one node per scan)."""

    input_spec = _AssessInputSpec
    output_spec = _AssessOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        self._results.update(
            qc_scan(
                in_file=inputs.in_file,
                source_file=inputs.source_file,
                bids_name=inputs.bids_name,
                entities=inputs.entities,
                output_dir=inputs.output_dir,
                subdir=inputs.subdir,
                model_dir=inputs.model_dir,
                slab_model_dir=inputs.slab_model_dir,
                omp_nthreads=inputs.omp_nthreads,
                reports=inputs.reports,
                problem=inputs.problem,
                bids_meta=inputs.bids_meta,
            )
        )
        return runtime
