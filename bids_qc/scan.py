"""One scan, end to end: load -> preprocess -> detectors -> grades/tier -> metrics.

:func:`assess_scan` never raises for a problem with the scan: the record gets status ``error``
with the failing stage and a reason naming the file, so a dataset run goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bids_qc.contrast_range import contrast_warning
from bids_qc.exceptions import ScanError
from bids_qc.judgeable import negative_background, set_cannot_judge
from bids_qc.models import DetectorBundle
from bids_qc.preprocessing import ModelGrid, preprocess
from bids_qc.record import DETECTORS, METRICS, new_record, set_error
from bids_qc.verdict import Verdict, assess_volume, slab_verdict_to_fuse

LOGGER = logging.getLogger(__name__)


@dataclass
class ScanAssessment:
    record: dict
    native: np.ndarray | None = None
    native_zooms: tuple | None = None
    model_input: np.ndarray | None = None
    registered: np.ndarray | None = None
    saliency: dict = field(default_factory=dict)


def _wm_snr(pre, record: dict) -> float | None:
    """The measured white-matter SNR (:mod:`bids_qc.wm_snr`) into the metrics; None when it
    could not be measured (the reason in ``metrics_notes``)."""
    measured = pre.record.get("wm_snr") or {}
    value = measured.get("value")
    record["metrics"]["wm_snr"] = value
    if value is None:
        record["metrics_notes"]["wm_snr"] = measured.get("note") or (
            "not measured: the scan was not registered (partial coverage or preprocessing stopped)")
    return value


def _metrics(pre, record: dict) -> None:
    from bids_qc.metrics import metrics_of

    try:  # partial coverage (not registered): only the native, reference-free metrics
        metrics, notes = metrics_of(pre)
        record["metrics"].update({k: float(v) for k, v in metrics.items()})
        record["metrics_notes"].update(notes)
    except Exception as exc:  # metrics must never kill the scan's other results
        LOGGER.warning("%s: metrics failed: %s", record["source_file"], exc)
        # wm_snr was measured by preprocessing, not here: its value and note stand
        record["metrics_notes"].update({m: f"metrics failed: {exc}" for m in METRICS if m != "wm_snr"})


def _saliency(bundle: DetectorBundle, x: torch.Tensor, verdict: Verdict) -> dict:
    """Grad-CAM of every detector that fired."""
    from bids_qc.saliency import grad_cam

    maps = {}
    for det in DETECTORS:
        if verdict.positives[det]:
            try:
                maps[det] = grad_cam(bundle.members[0][det], x, target=1)
            except Exception as exc:  # a missing saliency map is not a failed scan
                LOGGER.warning("saliency for %s failed: %s", det, exc)
    return maps


def _slab_motion(slab, pre, record: dict) -> None:
    """Score motion on sagittal slice triplets (works on slabs too); a failure is a warning."""
    try:
        affine = np.diag([*map(float, pre.native_zooms), 1.0])  # pre.native is RAS already
        record["slab_motion"] = slab.assess(pre.native, affine)
    except Exception as exc:  # a missing slab score is not a failed scan
        LOGGER.warning("%s: slab motion detector failed: %s", record["source_file"], exc)
        record["warnings"].append(f"slab motion detector failed: {exc}")


def assess_scan(path, bundle: DetectorBundle, *, omp_nthreads: int = 1,
                want_images: bool = True, slab=None) -> ScanAssessment:
    """Assess one T1w file with ``bundle`` (and the slab motion detector ``slab``, if given).
    Never raises for a bad scan (status error instead)."""
    torch.set_num_threads(max(1, int(omp_nthreads)))
    t_start = time.perf_counter()
    record = new_record(path)
    record["model"] = {"id": bundle.model_id, "trained": bundle.trained, "dir": str(bundle.folder),
                       "thresholds": bundle.thresholds}
    if not bundle.trained:
        record["warnings"].append(
            "the model is NOT trained (random weights): probabilities, grades and tier are meaningless")
    out = ScanAssessment(record=record)
    stage = "preprocessing"
    refusal = None  # why the detectors must not be run on a scan read without error
    try:
        grid: ModelGrid = bundle.grid
        pre = preprocess(path, grid=grid, threads=omp_nthreads)
        record["preprocessing"] = pre.record
        wm_snr = _wm_snr(pre, record)
        record["warnings"].extend(pre.warnings)
        record["timings"].update({k: round(v, 4) for k, v in pre.timings.items()})
        out.model_input = pre.model_input  # kept always: the group level reuses it
        if want_images:
            out.native, out.native_zooms = pre.native, pre.native_zooms
            out.registered = pre.registered
        refusal = negative_background(pre.native)
        if refusal:
            LOGGER.warning("%s: cannot judge: %s", path, refusal)
            out.model_input = None  # nothing the group level may re-score either
        if slab is not None and not refusal:  # before the detectors: its verdict may be fused
            stage = "slab motion"
            t = time.perf_counter()
            _slab_motion(slab, pre, record)
            record["timings"]["slab_motion"] = round(time.perf_counter() - t, 4)
        if pre.model_input is not None and not refusal:
            stage = "inference"
            t = time.perf_counter()
            verdict = assess_volume(bundle, pre.model_input, wm_snr=wm_snr,
                                    slab_motion=slab_verdict_to_fuse(record.get("slab_motion")))
            record.update(verdict.record_fields())
            record["timings"]["inference"] = round(time.perf_counter() - t, 4)
            if want_images:
                t = time.perf_counter()
                x = torch.from_numpy(pre.model_input)[None, None]
                out.saliency = _saliency(bundle, x, verdict)
                record["timings"]["saliency"] = round(time.perf_counter() - t, 4)
        stage = "metrics"
        t = time.perf_counter()
        _metrics(pre, record)
        record["timings"]["metrics"] = round(time.perf_counter() - t, 4)
        if record.get("tier") is not None:  # the contrast grade was given: is it worth anything?
            warning = contrast_warning(record["metrics"].get("nd_wgm"), bundle.manifest)
            if warning:
                record["warnings"].append(warning)
    except ScanError as exc:
        set_error(record, exc, stage)
    except Exception as exc:  # unexpected: still a per-scan failure, never a dead run
        LOGGER.exception("%s: unexpected failure during %s", path, stage)
        set_error(record, exc, stage)
        record["error"]["message"] = f"{path}: unexpected {exc.__class__.__name__} during {stage}: {exc}"
    set_cannot_judge(record, refusal)
    record["timings"]["total"] = round(time.perf_counter() - t_start, 4)
    return out
