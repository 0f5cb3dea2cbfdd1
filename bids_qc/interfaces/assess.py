"""The per-scan nipype interface: assess one T1w file and write its derivatives.

Thin on purpose: :func:`qc_scan` calls :func:`bids_qc.scan.assess_scan`, adds the BIDS
fields to the record and writes ``<stem>_qc.html`` (optional) then ``<stem>_qc.json``, both
atomically. The JSON is written last, so "the JSON exists with status ok" means the scan is
complete (the resume test).

The detector bundle is loaded once per process and kept in :data:`_BUNDLES` (keyed by the
resolved model folder). The CLI loads it before the workers start, so MultiProc workers
(forked) inherit it instead of loading it again.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")  # nipype must not phone home (no network at run time)

from nipype.interfaces.base import (  # noqa: E402
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_qc.outputs import atomic_write_json, scan_output_paths  # noqa: E402

LOGGER = logging.getLogger(__name__)

_BUNDLES: dict = {}
_REPORT_IMPORT_FAILED: list = []


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


def _write_report(assessment, html_path: Path) -> str | None:
    """Write the participant HTML report; returns a warning text instead of raising."""
    try:
        from bids_qc.reports.render import write_participant_report
    except ImportError as exc:
        if not _REPORT_IMPORT_FAILED:
            LOGGER.warning("HTML reports unavailable (%s); writing JSON only", exc)
            _REPORT_IMPORT_FAILED.append(str(exc))
        return None
    try:  # the renderer writes atomically itself (tmp file + os.replace)
        write_participant_report(assessment, html_path)
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
    omp_nthreads: int = 1,
    reports: bool = True,
) -> dict:
    """Assess ``in_file`` and write its outputs under ``output_dir/subdir``.

    Returns a summary ``{"out_json", "status", "tier", "grades", "error", "io_error",
    "seconds"}``. A bad scan gives status ``error`` (never an exception); an ``OSError``
    while writing is returned in ``io_error`` (the scan's JSON may then be missing).
    """
    from bids_qc.record import new_record, set_error

    started = time.perf_counter()
    paths = scan_output_paths(Path(output_dir), Path(subdir), bids_name)
    assessment = None
    try:
        from bids_qc.scan import assess_scan

        bundle = get_bundle(model_dir)
        assessment = assess_scan(in_file, bundle, omp_nthreads=omp_nthreads,
                                 want_images=reports)
        record = assessment.record
    except Exception as exc:  # scan boundary: assess_scan should not raise, but never lose a scan
        LOGGER.exception("%s: assessment failed", in_file)
        record = set_error(new_record(in_file), exc, "internal")
    record["source_file"] = source_file
    record["bids_name"] = bids_name
    record["entities"] = dict(entities)

    summary = {
        "out_json": str(paths["json"]),
        "status": record.get("status"),
        "tier": record.get("tier"),
        "grades": dict(record.get("grades") or {}),
        "error": (record.get("error") or {}).get("message") or "",
        "io_error": "",
    }
    try:
        if reports and assessment is not None:
            written_at = time.perf_counter()
            warning = _write_report(assessment, paths["html"])
            if warning:
                record.setdefault("warnings", []).append(warning)
            record.setdefault("timings", {})["report"] = round(time.perf_counter() - written_at, 4)
        if assessment is not None and assessment.model_input is not None:
            from bids_qc.model_inputs import model_input_path, save_model_input

            save_model_input(assessment.model_input, get_bundle(model_dir).grid,
                             model_input_path(paths["json"].parent, bids_name))
        atomic_write_json(paths["json"], record)
    except OSError as exc:
        LOGGER.error("%s: cannot write outputs: %s", bids_name, exc)
        summary["io_error"] = f"{exc.__class__.__name__}: {exc}"
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


class _AssessInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the T1w NIfTI file")
    source_file = traits.Str(mandatory=True, desc="path relative to the BIDS root")
    bids_name = traits.Str(mandatory=True, desc="file name without .nii/.nii.gz")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the scan")
    output_dir = traits.Str(mandatory=True, desc="derivatives root")
    subdir = traits.Str(mandatory=True, desc="sub-X[/ses-Y]/anat")
    model_dir = traits.Str(mandatory=True, desc="detector model folder")
    omp_nthreads = traits.Int(1, usedefault=True, desc="threads for this scan")
    reports = traits.Bool(True, usedefault=True, desc="write the HTML report")


class _AssessOutputSpec(TraitedSpec):
    out_json = traits.Str(desc="the scan's _qc.json")
    status = traits.Str(desc="'ok' or 'error'")
    tier = traits.Any(desc="1, 2, 3 or None")
    grades = traits.Dict(desc="artefact -> grade")
    error = traits.Str(desc="error message ('' if ok)")
    io_error = traits.Str(desc="error writing outputs ('' if none)")
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
                omp_nthreads=inputs.omp_nthreads,
                reports=inputs.reports,
            )
        )
        return runtime
