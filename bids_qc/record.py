"""The per-scan result record: the JSON written as ``<stem>_qc.json`` (schema version 1).

Its typed schema, every key with a description, those always present ``required`` and ``null``
allowed where a NaN is written, is the JSON Schema shipped in
``bids_qc/data/schemas/qc_record.schema.json`` (:func:`bids_qc.resources.load_schema`);
``tests/test_record_schema.py`` fails when the code writes a key it does not list. Summary:

Keys (all present in every record; values ``None`` where not computed):

- ``schema_version`` (int), ``source_file`` (str, path as given),
- ``status``: ``"ok"`` or ``"error"``; ``error``: ``None`` or ``{"type", "message", "stage"}``,
- ``warnings``: list of human-readable strings (untrained model, partial coverage, ...),
- ``probabilities``: ``{detector: P(positive)}`` for the six :data:`DETECTORS`,
- ``slab_motion``: ``None`` or ``{"model_id", "score", "threshold", "motion", "n_triplets", "note"}``
  from the slab motion detector (sagittal slice triplets; scores partial-coverage slabs too),
- ``grades``: ``{"motion"|"noise"|"contrast": 0|1|2}``; ``tier``: 1 good, 2 medium, 3 reject,
- ``cannot_judge``: ``None``, or why a scan read without error got no verdict at all (neither a
  tier nor a slab motion score; or intensities the detectors cannot judge), see
  :mod:`bids_qc.judgeable`,
- ``metrics``: ``{"snr", "nd_wgm", "aes", "tenengrad", "snr_native", "wm_snr"}`` floats (NaN -> ``None`` in JSON),
  ``metrics_notes``: ``{metric: reason}`` for every metric that could not be computed,
- ``preprocessing``: parameters and the registration transform,
- ``timings``: seconds per stage, ``model``: ``{"id", "trained", "dir", "thresholds"}``
  (``thresholds``: ``{detector: threshold}`` the verdict used, from the model's manifest),
  ``software``: ``{"name", "version"}``.

Set by the verdict (:mod:`bids_qc.verdict`) when the detectors ran: ``uncertainty`` (float),
``needs_review`` (bool) and, for an ensemble model, ``probability_std`` (``{detector: std}``).

The BIDS layer adds ``bids_name``, ``entities`` (subject, session, run, acquisition, ...) and
``bids_meta``: ``{"Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "site"}``
read from the dataset's sidecars and ``participants.tsv`` (:mod:`bids_qc.bids_meta`; ``None``
values where the dataset does not say; the key is ``None`` for a scan that was not indexed, and
absent from records written before bids_qc captured it).
"""
from __future__ import annotations

import math

from bids_qc import __version__

ARTEFACTS = ("motion", "noise", "contrast")
SEVERITIES = ("moderate", "severe")
DETECTORS = tuple(f"{a}_{s}" for a in ARTEFACTS for s in SEVERITIES)


def check_detector_names(names, known=DETECTORS) -> None:
    """ValueError naming the entries of ``names`` that are not detectors (of ``known``)."""
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {sorted(known)}")


def detector_names(text: str | None) -> list[str]:
    """``"motion_severe, noise_severe"`` -> the detectors listed (command-line options); empty
    text lists none; an entry that is not a detector (also an empty one between commas) raises."""
    if not text:
        return []
    names = [d.strip() for d in text.split(",")]
    check_detector_names(names)
    return names
METRICS = ("snr", "nd_wgm", "aes", "tenengrad", "snr_native", "wm_snr")
SCHEMA_VERSION = 1


def new_record(source_file) -> dict:
    """An empty record for ``source_file`` with every key present."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source_file": str(source_file),
        "status": "ok",
        "error": None,
        "warnings": [],
        "probabilities": {d: None for d in DETECTORS},
        "grades": {a: None for a in ARTEFACTS},
        "tier": None,
        "cannot_judge": None,
        "slab_motion": None,
        "metrics": {m: None for m in METRICS},
        "metrics_notes": {},
        "preprocessing": {},
        "timings": {},
        "model": {},
        "software": {"name": "bids_qc", "version": __version__},
    }


def set_error(record: dict, exc: BaseException, stage: str) -> dict:
    """Mark ``record`` as failed at ``stage`` with the exception's type and message."""
    record["status"] = "error"
    message = getattr(exc, "reason", None) or str(exc) or exc.__class__.__name__
    record["error"] = {"type": exc.__class__.__name__, "message": message, "stage": stage}
    return record


def json_safe(value):
    """Replace NaN/inf floats by ``None`` recursively so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return json_safe(value.item())
    return value
