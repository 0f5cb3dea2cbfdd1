"""The participant report: one HTML page per scan (tier, detectors, metrics, mosaics, saliency).

The rating widgets export the annotations TSV documented in ``docs/annotations.md``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from bids_qc import __version__
from bids_qc.outputs import atomic_write_text
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS
from bids_qc.reports import mosaics
from bids_qc.reports.formatting import (
    ANNOTATION_COLUMNS,
    GRADE_COLOURS,
    GRADE_LABELS,
    METRIC_INFO,
    annotation_keys,
    bids_stem,
    fmt,
    int_or_none,
    number_or_none,
    plain,
    tier_info,
)
from bids_qc.reports.templating import render_template
from bids_qc.verdict import positive

logger = logging.getLogger(__name__)


def _flatten(value, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Nested dict -> [(dotted key, text)]; matrices in rows of fixed-width numbers."""
    if isinstance(value, dict) and depth < 4:
        rows = []
        for key, sub in value.items():
            rows += _flatten(sub, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        return rows
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, (list, tuple)) for r in value):
        text = "\n".join("  ".join(f"{fmt(c, 4):>9}" for c in r) for r in value)
        return [(prefix, text)]
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(fmt(v, 4) for v in value) or "[]")]
    return [(prefix, fmt(value, 4))]


def _fired(det: str, p, thresholds: dict, saliency: dict) -> bool:
    """Whether ``det`` fired: at the threshold the verdict used (the record's
    ``model.thresholds``); a record without them (older runs) shows the detectors that have a
    saliency map, i.e. those that fired when it was made."""
    if p is not None and thresholds.get(det) is not None:
        return bool(positive(p, thresholds[det]))
    return det in saliency


def _line_pct(threshold) -> float | None:
    """Where a detector's threshold line sits on its 0-1 bar, in % (None: no threshold known,
    no line is drawn rather than a guessed 0.5)."""
    t = number_or_none(threshold)
    return None if t is None else max(0.0, min(100.0, 100 * t))


def participant_context(assessment) -> dict:
    """Everything the participant template shows, as plain values and data URIs."""
    record = plain(getattr(assessment, "record", None) or {})
    source = record.get("source_file") or ""
    bids_name = record.get("bids_name") or bids_stem(source) or "scan"
    status = record.get("status") or "ok"
    error = record.get("error") or None
    probs = record.get("probabilities") or {}
    grades = record.get("grades") or {}
    saliency = getattr(assessment, "saliency", None) or {}
    model = record.get("model") or {}

    warnings = [str(w) for w in record.get("warnings") or []]
    if status != "error" and model.get("trained") is False and not any(("untrained" in w.lower() or "not trained" in w.lower()) for w in warnings):
        warnings.append("The model is untrained: probabilities, grades and tier are placeholders.")

    thresholds = model.get("thresholds") or {}
    detectors = []
    for art in ARTEFACTS:
        grade = int_or_none(grades.get(art))
        sev = []
        for s in ("moderate", "severe"):
            det = f"{art}_{s}"
            p = probs.get(det)
            sev.append({"name": det, "severity": s, "p": p, "p_text": fmt(p),
                        "pct": 0 if p is None else max(0.0, min(100.0, 100 * float(p))),
                        "threshold": thresholds.get(det),
                        "line_pct": _line_pct(thresholds.get(det)),
                        "positive": _fired(det, p, thresholds, saliency)})
        detectors.append({"artefact": art, "grade": grade, "grade_label": GRADE_LABELS.get(grade, "n/a"),
                          "colour": GRADE_COLOURS[grade] if grade in (0, 1, 2) else "#8a8f98",
                          "severities": sev})

    metrics_values = record.get("metrics") or {}
    notes = record.get("metrics_notes") or {}
    metrics = [{"key": m, "name": METRIC_INFO.get(m, (m, ""))[0], "help": METRIC_INFO.get(m, ("", ""))[1],
                "value": fmt(metrics_values.get(m), 4), "note": notes.get(m, "")}
               for m in list(METRICS) + [k for k in metrics_values if k not in METRICS]]

    t0 = time.perf_counter()
    images, image_notes = {}, []
    native = getattr(assessment, "native", None)
    zooms = tuple(getattr(assessment, "native_zooms", None) or (1.0, 1.0, 1.0))
    images["raw"] = mosaics.mosaic_uris(native, zooms)
    registered = getattr(assessment, "registered", None)
    model_input = getattr(assessment, "model_input", None)
    images["preproc_kind"] = None
    if registered is not None:
        mask = mosaics.template_brain_mask()
        if mask is not None and mask.shape != np.shape(registered):
            mask = None
        images["preproc"] = mosaics.mosaic_uris(registered, (2.0, 2.0, 2.0), contour=mask)
        images["preproc_kind"] = "registered" + ("+contour" if mask is not None else "")
    elif model_input is not None:
        images["preproc"] = mosaics.mosaic_uris(model_input, (2.5, 2.5, 2.5))
        images["preproc_kind"] = "model_input"
    else:
        images["preproc"] = {}
    if not images["raw"]:
        image_notes.append("No raw image to show" + (" (the scan could not be read)." if status == "error" else "."))
    if not images["preproc"]:
        image_notes.append("No preprocessed image" + (f" (failed at stage '{error.get('stage')}')."
                                                      if error else "."))
    sal_maps = {d: m for d, m in saliency.items()
                if model_input is not None and np.shape(m) == np.shape(model_input)}
    dropped = sorted(set(saliency) - set(sal_maps))
    if dropped:
        logger.warning("%s: saliency maps %s do not match the model input; not shown", bids_name, dropped)
    ordered = {d: sal_maps[d] for d in list(DETECTORS) + sorted(set(sal_maps) - set(DETECTORS)) if d in sal_maps}
    images["saliency"] = (mosaics.saliency_strips(model_input, ordered) if ordered else None)
    images["legend"] = mosaics.heat_legend_uri() if ordered else None
    logger.debug("%s: report figures in %.3f s", bids_name, time.perf_counter() - t0)

    keys = annotation_keys(bids_name, record.get("entities"))
    return {
        "title": f"{bids_name} — bids_qc report",
        "bids_name": bids_name, "source_file": source, "status": status, "error": error,
        "cannot_judge": record.get("cannot_judge") if status != "error" else None,
        "tier": tier_info(record.get("tier")), "detectors": detectors, "metrics": metrics,
        "warnings": warnings, "model": model, "slab": record.get("slab_motion"),
        "entities": {k: v for k, v in (record.get("entities") or {}).items() if v is not None},
        "preprocessing": _flatten(record.get("preprocessing") or {}),
        "timings": [(k, fmt(v, 3)) for k, v in (record.get("timings") or {}).items()],
        "software": record.get("software") or {"name": "bids_qc", "version": __version__},
        "images": images, "image_notes": image_notes,
        "positive": list(ordered),
        "saliency_empty": [d for d in ordered if not float(np.max(ordered[d])) > 0],
        # ratings are kept in the browser per derivatives folder: the report sits in
        # <root>/sub-X/[ses-Y/]anat/, so the root is 2 or 3 levels up
        "rating": {**keys, "root": "../" * (3 if keys["session"] != "n/a" else 2),
                   "model": {a: grades.get(a) for a in ARTEFACTS}, "model_tier": record.get("tier")},
        "annotation_columns": ANNOTATION_COLUMNS,
        "record_text": json.dumps(record, indent=2), "version": __version__,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
    }


def render_participant_report(assessment) -> str:
    """HTML text of the report of one scan (``bids_qc.scan.ScanAssessment``)."""
    return render_template("participant.html.j2", participant_context(assessment))


def write_participant_report(assessment, html_path) -> Path:
    """Render and write the participant report to ``html_path`` (parents created)."""
    return atomic_write_text(Path(html_path), render_participant_report(assessment))
