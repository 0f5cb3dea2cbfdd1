"""Any T1w volume -> a stack of 2 mm sagittal slices in RAS, and the slice triplets the network reads.

The stack has shape ``(n_x, 128, 128)``: axis 0 left -> right, axis 1 posterior -> anterior,
axis 2 inferior -> superior, 2 mm voxels, in-plane centred on the head's foreground. Slabs keep
their few slices (a 20 mm slab gives 10). No registration is needed, so nothing can fail on a
partial field of view.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

SPACING_MM = 2.0
PLANE = (128, 128)
FOREGROUND_FRACTION = 0.1  # of the 99th intensity percentile (same rule as the metrics)
MIN_SLICE_FOREGROUND = 0.05  # a triplet's middle slice must hold this much head
# the slices cached, trained on and scored: at least this share of the fullest slice's head
HEAD_FRACTION_OF_PEAK = 0.3
NORMALISATION_PERCENTILE = 99.0


def to_ras_stack(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorient to RAS, resample to ``SPACING_MM`` and centre-crop/pad the plane to ``PLANE``."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    volume = np.asarray(img.dataobj, dtype=np.float32)
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    factors = zooms / SPACING_MM
    if np.any(np.abs(factors - 1) > 0.02):
        volume = ndimage.zoom(volume, factors, order=1, prefilter=False, grid_mode=True,
                              mode="grid-constant")
    return _centre_plane(np.clip(volume, 0, None))


def _centre_plane(volume: np.ndarray) -> np.ndarray:
    """Crop or zero-pad axes 1 and 2 to ``PLANE`` around the foreground's centre of mass."""
    ref = np.percentile(volume, 99) if volume.size else 0.0
    fg = volume > FOREGROUND_FRACTION * ref if ref > 0 else np.ones_like(volume, bool)
    centre = [int(round(c)) for c in ndimage.center_of_mass(fg.any(axis=0))] if fg.any() else \
        [s // 2 for s in volume.shape[1:]]
    out = np.zeros((volume.shape[0],) + PLANE, np.float32)
    src, dst = [slice(None)], [slice(None)]
    for axis, size in zip((1, 2), PLANE):
        start = centre[axis - 1] - size // 2
        lo, hi = max(start, 0), min(start + size, volume.shape[axis])
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def slice_foreground(stack: np.ndarray) -> np.ndarray:
    """Fraction of each sagittal slice that is head (foreground)."""
    ref = np.percentile(stack, 99)
    if ref <= 0:
        return np.zeros(stack.shape[0])
    return (stack > FOREGROUND_FRACTION * ref).mean(axis=(1, 2))


def triplet_centres(stack: np.ndarray, min_fraction_of_peak: float = 0.0) -> np.ndarray:
    """Middle-slice indices of the triplets worth scoring: interior slices that hold head, and
    (``min_fraction_of_peak`` > 0) at least that fraction of the most-filled slice's head."""
    frac = slice_foreground(stack)
    idx = np.arange(1, stack.shape[0] - 1)
    if idx.size == 0:
        return idx
    keep = frac[idx] >= MIN_SLICE_FOREGROUND
    if min_fraction_of_peak > 0:
        keep &= frac[idx] >= min_fraction_of_peak * frac.max()
    return idx[keep]


def bright_level(array: np.ndarray) -> float:
    """The :data:`NORMALISATION_PERCENTILE` of the positive voxels (0 when there are none)."""
    positive = array[array > 0]
    return float(np.percentile(positive, NORMALISATION_PERCENTILE)) if positive.size else 0.0


def normalise(triplet: np.ndarray) -> np.ndarray:
    """Scale a ``(3, H, W)`` triplet so its foreground's 99th percentile is 1 (clipped at 1.5)."""
    triplet = np.asarray(triplet, np.float32)
    ref = bright_level(triplet)
    if ref <= 0:
        return np.zeros_like(triplet)
    return np.clip(triplet / ref, 0.0, 1.5)


def to_float16(stack: np.ndarray) -> np.ndarray:
    """``stack`` as float16 for caching, scaled so its foreground 99th percentile is 1.

    Scores do not depend on the scale (every triplet is normalised, the head found relative to a
    percentile), but raw scanner units do not fit float16: values above 65504 become inf, and a
    Philips scan stored up to ~159 000 then had no head and no score."""
    stack = np.asarray(stack, np.float32)
    ref = bright_level(stack)
    return (stack / (ref if ref > 0 else 1.0)).astype(np.float16)


def triplets(stack: np.ndarray, centres) -> np.ndarray:
    """``(n, 3, H, W)`` normalised triplets around ``centres``."""
    return np.stack([normalise(stack[c - 1:c + 2]) for c in centres]) if len(centres) else \
        np.zeros((0, 3) + PLANE, np.float32)
