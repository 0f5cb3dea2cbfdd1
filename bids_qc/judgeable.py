"""Whether the app can judge a scan at all, and if not, why ("cannot judge: <why>").

A scan that was read without error gets a verdict from the six registered detectors (a tier)
or, for a partial-coverage slab, from the slab motion detector. When neither applies, the record
must say so plainly instead of looking like an ordinary "ok" scan: ``record["cannot_judge"]``
holds the reason (``None`` when the scan was judged), and the group table, the log and both
reports show it.

Two causes are checked here, on plain arrays and the record:

- :func:`negative_background`: intensities whose background (air) is negative, e.g. signed int8
  stored with an offset of -128. The detectors were trained on magnitude images with air at 0
  and the metrics need positive tissue levels: their numbers would be meaningless, so the scan
  is not given any.
- :func:`no_verdict_reason`: no tier (the field of view is too small to register) and no slab
  motion score (e.g. an axial slab, or too little head in any sagittal slice).
"""
from __future__ import annotations

import numpy as np

#: Width (voxels) of the outer shell of the volume taken as its background.
BORDER_VOXELS = 2


def border_voxels(volume: np.ndarray, width: int = BORDER_VOXELS) -> np.ndarray:
    """The voxels within ``width`` of any face of a 3D ``volume`` (1D array)."""
    volume = np.asarray(volume)
    inner = [slice(width, max(width, n - width)) for n in volume.shape]
    mask = np.ones(volume.shape, bool)
    mask[tuple(inner)] = False
    return volume[mask]


def negative_background(volume: np.ndarray) -> str | None:
    """Why ``volume`` (native intensities) cannot be judged if its background is negative, else
    ``None``. The background level is the median of the outer shell (:data:`BORDER_VOXELS`); a
    few negative voxels (interpolation ringing) do not count."""
    border = border_voxels(volume)
    if border.size == 0:
        return None
    level = float(np.median(border))
    if level >= 0:
        return None
    return (f"the image background is negative (median of the border voxels {level:g}, minimum "
            f"{float(np.min(volume)):g}); the detectors and metrics expect air at 0 as in a "
            "magnitude image (e.g. signed int8 stored with an offset): no probabilities, grades, "
            "tier or slab motion score are given. Rescale the image so that air is 0 and run "
            "again")


def _partial_coverage(record: dict) -> str | None:
    if not (record.get("preprocessing") or {}).get("partial_coverage"):
        return None
    extent = (record.get("preprocessing") or {}).get("native_extent_mm") or []
    shape = (record.get("preprocessing") or {}).get("native_shape") or []
    what = ("x".join(str(n) for n in shape) + " voxels, ") if shape else ""
    size = " x ".join(f"{e:g}" for e in extent) + " mm" if extent else "too small"
    return (f"field of view too small to register ({what}{size}; the six detectors need >= "
            "100 mm on every axis)")


def no_verdict_reason(record: dict) -> str | None:
    """Why an ``ok`` record has neither a tier nor a slab motion verdict (``None`` if it has one
    of them, or is an error: errors say why themselves). A slab score without a verdict (thick
    slices) ranks the scan but does not judge it."""
    if record.get("status") != "ok" or record.get("tier") is not None:
        return None
    slab = record.get("slab_motion") or {}
    if slab.get("motion") is not None:
        return None
    parts = [_partial_coverage(record) or "the six detectors gave no tier"]
    if record.get("slab_motion") is None:
        parts.append("the slab motion detector did not run")
    elif slab.get("score") is not None:
        parts.append(f"the slab motion detector gave a score but {slab.get('note') or 'no verdict'}")
    else:
        note = str(slab.get("note") or "no score").removeprefix("not scored: ")
        parts.append(f"the slab motion detector could not score it ({note})")
    return "; ".join(parts)


def set_cannot_judge(record: dict, refusal: str | None = None) -> dict:
    """Fill ``record["cannot_judge"]`` with ``refusal`` or :func:`no_verdict_reason`."""
    if record.get("status") == "ok":
        record["cannot_judge"] = refusal or no_verdict_reason(record)
    else:
        record["cannot_judge"] = None
    return record
