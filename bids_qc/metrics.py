"""Image-quality metrics of one T1w scan: SNR, ND-WGM, AES, Tenengrad and native SNR (numpy/scipy).

Where each metric is measured and in which unit (the masks are described in :mod:`bids_qc.masks`):

- ``snr`` = WM level / std(air), on the registered image (2 mm MNI grid, bias-corrected),
  unitless. The WM level ("mean(WM)" of the issue) is estimated robustly: the median of the WM
  mask (why the median: :mod:`bids_qc.masks`). std is the sample standard deviation (ddof=1) of
  the air voxels, without a Rayleigh correction. The registered image is interpolated, which
  lowers the noise std, so values are *higher* than an SNR measured on the native grid and depend
  on the resampling; compare scans processed alike. Pass ``fov`` to :func:`compute_metrics` to use
  the exact field of view; the estimate from the zeros of the image loses the air of a quantised
  or zero-filled background (IXI). A background that is exactly zero everywhere in the air gives
  NaN with reason ``"air std is zero (quantised or zero-filled background)"`` rather than an
  infinite SNR. Published clinical means: 74 / 44 / 25 for noise grades 0 / 1 / 2.
- ``nd_wgm`` = |WM - GM| / (WM + GM), the normalised difference of the white- and grey-matter
  levels (medians of the masks, as for SNR) on the registered image, unitless in [0, 1].
  Published clinical means: 0.16 / 0.13 / 0.10 for contrast grades 0 / 1 / 2. It depends on the
  registration: an affine misfit mixes CSF into the GM mask and raises it (clean IXI scans:
  0.10-0.13 with the app's registration, up to 0.26 with a poorer one).
- ``aes`` (average edge strength, after Zacharaki et al. 2008 and Aksoy et al. 2012, who average
  the gradient magnitude on Canny edges slice by slice): here in 3D on the registered image, inside
  the brain (GM + WM prior > 0.5, dilated by one voxel, inside the field of view). Edges = voxels
  of a Canny-like detector on the image smoothed by a 1-voxel (2 mm) Gaussian: local maxima of
  the gradient magnitude along
  the gradient direction, hysteresis thresholds at the 75th percentile of those maxima (high) and
  half of it (low). AES = mean gradient magnitude (3D Sobel of the unsmoothed image, in
  intensity/mm) on the edges / mean intensity of the brain, in mm^-1. Higher = sharper; motion
  and blur lower it, and so do noise (spurious weak edges) and lower contrast. Measured on the
  registered image because the brain is known there; on the native head the ghosts of motion
  add edges and AES *rises* with motion (tried on IXI).
- ``tenengrad`` (Krotkov 1988), on the *native* image: the foreground F is the voxels
  > 0.1 x the 99th percentile of the image (computed on a regular subgrid of <= 4 M voxels);
  tenengrad = mean over F of |grad I|^2 / (mean over F of I)^2, where grad I is the 3D Sobel
  gradient (scipy's kernel: derivative [-1, 0, 1] times smoothing [1, 2, 1] on the two other
  axes, divided by 32 x voxel size so that it is in intensity/mm; image borders reflected). Unit
  mm^-2. Higher = sharper. This matches BASELINES.md's formula up to the per-axis factor
  1 / (32 x zoom)^2, so rankings at one resolution are identical.
- ``snr_native`` = mean over F of I / std(air), on the *native* image, unitless, higher = cleaner
  (MRQy's SNR2 idea; no registration needed, so it also judges slabs). F as for Tenengrad; air =
  voxels farther than 10 mm from the head (F closed and hole-filled; in a very noisy scan, where
  single air voxels pass F's level, the largest component of the smoothed F: :func:`head_and_air`).
  An air whose std is below 1e-4 of F's mean is zero-filled (NaN with a reason), not an SNR of
  10^13. Both are measured on a regular subgrid of <= 300 k voxels. Noise and motion ghosts (which spread along the
  phase-encoding direction into the air) raise std(air): on the real motion pairs of
  ``../shared/data/motion_pairs`` it ranks every moving slab below its still twin.

AES, Tenengrad, SNR and ND-WGM do not change when the image is multiplied by a constant.
Metrics that cannot be computed are NaN with a reason; :func:`compute_metrics` never raises.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from bids_qc.masks import (
    MAD_TO_SD,
    SMOOTHING_SIGMA_VOXELS,
    Masks,
    bounding_box,
    build_masks,
    largest_component,
    load_priors,
    template_affine,
)

__all__ = ["MetricUndefined", "aes", "compute_metrics", "load_priors", "metrics_of", "nd_wgm", "snr",
           "air_std", "head_and_air", "snr_native", "sobel_gradient", "tenengrad"]

LOGGER = logging.getLogger(__name__)
NAN = float("nan")
METRIC_NAMES = ("snr", "nd_wgm", "aes", "tenengrad", "snr_native")
MIN_TISSUE_VOXELS = 50
MIN_AIR_VOXELS = 100
MIN_EDGE_VOXELS = 20
FOREGROUND_FRACTION = 0.1
FOREGROUND_PERCENTILE = 99.0
PERCENTILE_MAX_VOXELS = 4_000_000
AIR_SAMPLE_MAX_VOXELS = 300_000
AIR_MARGIN_MM = 10.0
AIR_FLOOR_SPREADS = 5.0
NOISY_AIR_KEPT = 0.5
HEAD_OVER_AIR = 1.5  # head_and_air: below this share of the air, the specks are noise
ZERO_AIR_FRACTION = 1e-4  # air std below this share of the head's mean: zero-filled
EDGE_HIGH_PERCENTILE = 75.0
EDGE_LOW_FRACTION = 0.5
CHUNK_SLICES = 32


class MetricUndefined(ValueError):
    """A metric cannot be computed for this image; ``reason`` says why (recorded in the notes)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# ----------------------------------------------------------------------------- tissue metrics

def _tissue_level(image: np.ndarray, mask: np.ndarray, name: str) -> float:
    """Median intensity of ``image`` in ``mask`` (robust tissue level)."""
    n = int(mask.sum())
    if n < MIN_TISSUE_VOXELS:
        raise MetricUndefined(f"{name} mask has {n} voxels (< {MIN_TISSUE_VOXELS}): "
                              "empty or tiny field of view")
    return float(np.median(image[mask]))


def snr(image: np.ndarray, wm_mask: np.ndarray, air_mask: np.ndarray) -> float:
    """median(image[wm_mask]) / std(image[air_mask], ddof=1), unitless (module docstring)."""
    wm_level = _tissue_level(image, wm_mask, "white-matter")
    n_air = int(air_mask.sum())
    if n_air < MIN_AIR_VOXELS:
        raise MetricUndefined(f"air mask has {n_air} voxels (< {MIN_AIR_VOXELS}): the field of "
                              "view leaves no background above the nasion plane")
    air_std = float(image[air_mask].std(dtype=np.float64, ddof=1))
    if not air_std > 0:
        raise MetricUndefined("air std is zero (quantised or zero-filled background)")
    if not wm_level > 0:
        raise MetricUndefined(f"white-matter level is not positive ({wm_level:g})")
    return wm_level / air_std


def nd_wgm(image: np.ndarray, gm_mask: np.ndarray, wm_mask: np.ndarray) -> float:
    """|WM - GM| / (WM + GM) with the medians of the masks as levels, unitless in [0, 1]."""
    wm_level = _tissue_level(image, wm_mask, "white-matter")
    gm_level = _tissue_level(image, gm_mask, "grey-matter")
    if not (wm_level > 0 and gm_level > 0):
        raise MetricUndefined(f"tissue levels are not positive (WM {wm_level:g}, GM {gm_level:g})")
    return abs(wm_level - gm_level) / (wm_level + gm_level)


# ----------------------------------------------------------------------------- gradients

def _axis_slice(ndim: int, axis: int, start: int, stop: int | None) -> tuple:
    return tuple(slice(start, stop) if i == axis else slice(None) for i in range(ndim))


def _smooth_valid(x: np.ndarray, axis: int) -> np.ndarray:
    """[1, 2, 1] along ``axis``, 'valid' part only (output 2 shorter)."""
    n = x.shape[axis]
    return (x[_axis_slice(x.ndim, axis, 0, n - 2)] + 2 * x[_axis_slice(x.ndim, axis, 1, n - 1)]
            + x[_axis_slice(x.ndim, axis, 2, n)])


def _deriv_valid(x: np.ndarray, axis: int) -> np.ndarray:
    """[-1, 0, 1] along ``axis`` (x[i+1] - x[i-1]), 'valid' part only."""
    n = x.shape[axis]
    return x[_axis_slice(x.ndim, axis, 2, n)] - x[_axis_slice(x.ndim, axis, 0, n - 2)]


def _sobel_valid(padded: np.ndarray, zooms) -> list[np.ndarray]:
    """3D Sobel components (intensity/mm) of an array padded by one voxel on every side."""
    s0, s1 = _smooth_valid(padded, 0), _smooth_valid(padded, 1)
    g0 = _deriv_valid(_smooth_valid(s1, 2), 0) / (32.0 * zooms[0])
    g1 = _deriv_valid(_smooth_valid(s0, 2), 1) / (32.0 * zooms[1])
    g2 = _deriv_valid(_smooth_valid(s0, 1), 2) / (32.0 * zooms[2])
    return [g0, g1, g2]


def sobel_gradient(volume: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    """3D Sobel gradient, shape (3, *volume.shape), float32, intensity/mm; borders reflected
    (the same values as ``scipy.ndimage.sobel(volume, axis) / (32 * zooms[axis])``)."""
    padded = np.pad(np.asarray(volume, dtype=np.float32), 1, mode="symmetric")
    return np.stack(_sobel_valid(padded, tuple(float(z) for z in zooms)))


def _check_volume(volume, name: str, min_size: int = 3) -> np.ndarray:
    if volume is None:
        raise MetricUndefined(f"no {name} image")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise MetricUndefined(f"{name} image is not 3D (shape {volume.shape})")
    if min(volume.shape) < min_size:
        raise MetricUndefined(f"{name} image too small for a 3x3x3 gradient (shape {volume.shape})")
    if not np.isfinite(volume).all():
        raise MetricUndefined(f"{name} image holds NaN or infinite values")
    return volume


def _zooms(zooms) -> tuple[float, float, float]:
    try:
        out = tuple(float(z) for z in zooms)
    except TypeError as exc:
        raise MetricUndefined(f"voxel sizes are not numbers ({zooms!r})") from exc
    if len(out) != 3 or not all(math.isfinite(z) and z > 0 for z in out):
        raise MetricUndefined(f"voxel sizes must be three positive numbers, got {zooms!r}")
    return out


# ----------------------------------------------------------------------------- sharpness

def _with_halo(volume: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """float32 copy of ``volume[box]`` grown by one voxel on every side; beyond the image border
    the edge voxel is repeated (= scipy's 'reflect' mode for a 3-tap kernel)."""
    shape = [b.stop - b.start + 2 for b in box]
    out = np.empty(shape, dtype=np.float32)
    src, dst = [], []
    for b, n in zip(box, volume.shape, strict=True):
        lo, hi = max(b.start - 1, 0), min(b.stop + 1, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - (b.start - 1), hi - (b.start - 1)))
    out[tuple(dst)] = volume[tuple(src)]
    for axis, (b, n) in enumerate(zip(box, volume.shape, strict=True)):
        if b.start == 0:
            out[_axis_slice(3, axis, 0, 1)] = out[_axis_slice(3, axis, 1, 2)]
        if b.stop == n:
            out[_axis_slice(3, axis, -1, None)] = out[_axis_slice(3, axis, -2, -1)]
    return out


def _subgrid_reference(native: np.ndarray, max_voxels: int) -> tuple[np.ndarray, int, float]:
    """A regular subgrid of <= ``max_voxels`` voxels (float32), its step, and its 99th percentile
    (the foreground reference; raises if it is not positive)."""
    step = max(1, int(math.ceil((native.size / max_voxels) ** (1 / 3))))
    sample = np.asarray(native[::step, ::step, ::step], dtype=np.float32)
    ref = float(np.percentile(sample, FOREGROUND_PERCENTILE))
    if not ref > 0:
        raise MetricUndefined("native image has no positive intensities (empty image)")
    return sample, step, ref


def tenengrad(native: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> float:
    """Mean squared 3D Sobel gradient magnitude over the foreground / mean foreground intensity^2
    (mm^-2, higher = sharper; definition in the module docstring). Memory and time stay bounded
    on large scans: the gradient is computed in slabs of 32 slices over the foreground's bounding
    box, without copying the whole image."""
    native = _check_volume(native, "native")
    zooms = _zooms(zooms)
    _, _, ref = _subgrid_reference(native, PERCENTILE_MAX_VOXELS)
    fg = native > FOREGROUND_FRACTION * ref
    if not fg.any():
        raise MetricUndefined("native image has no foreground")
    box = bounding_box(fg)
    total_g2, total_intensity, count = 0.0, 0.0, 0
    for start in range(box[0].start, box[0].stop, CHUNK_SLICES):
        inner_box = (slice(start, min(start + CHUNK_SLICES, box[0].stop)),) + box[1:]
        chunk = _with_halo(native, inner_box)
        weight = fg[inner_box].astype(np.float32)  # products with 0/1: fast masked sums
        g0, g1, g2 = _sobel_valid(chunk, zooms)
        g0 *= g0
        g0 += g1 * g1
        g0 += g2 * g2
        total_g2 += float(np.dot(g0.reshape(-1), weight.reshape(-1)))
        weight *= chunk[1:-1, 1:-1, 1:-1]
        total_intensity += float(weight.sum(dtype=np.float64))
        count += int(np.count_nonzero(fg[inner_box]))
    if total_g2 == 0:
        raise MetricUndefined("native image is constant over its foreground (no gradient)")
    return (total_g2 / count) / (total_intensity / count) ** 2


def head_and_air(native: np.ndarray, zooms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(subgrid sample, foreground, air)`` of a native image: the foreground as for Tenengrad,
    the air = voxels farther than ``AIR_MARGIN_MM`` from anything in the foreground (closed and
    hole-filled: the head, and bright specks or ghosts in the air), on a regular subgrid of
    <= ``AIR_SAMPLE_MAX_VOXELS`` voxels.

    In a very noisy scan single air voxels pass the foreground level (white-matter SNR ~25 or
    less), or the whole air does (on a sub-mm grid the magnitude noise floor alone can exceed 10 %
    of the head's level), and the 10 mm kept around each of them leaves no air to measure the
    noise in. When that rule keeps less than ``NOISY_AIR_KEPT`` of the air around the head alone,
    the head alone is used: the largest component of the smoothed image above the foreground
    level or, if higher, just above the air's noise floor (:func:`_air_floor_level`), provided
    that head is at least ``HEAD_OVER_AIR`` times brighter than that air (median)."""
    sample, step, ref = _subgrid_reference(native, AIR_SAMPLE_MAX_VOXELS)
    mm = [z * step for z in zooms]
    fg = sample > FOREGROUND_FRACTION * ref
    air = _farther_than_margin(fg, mm)
    smooth = ndi.gaussian_filter(sample, sigma=SMOOTHING_SIGMA_VOXELS)
    level = max(FOREGROUND_FRACTION * ref, _air_floor_level(smooth))
    head = largest_component(smooth > level)
    around_head = _farther_than_margin(head, mm)
    if (head.any() and np.count_nonzero(air) < NOISY_AIR_KEPT * np.count_nonzero(around_head)
            and np.median(sample[head]) > HEAD_OVER_AIR * np.median(sample[around_head])):
        air = around_head
    return sample, fg, air


def _air_floor_level(smooth: np.ndarray) -> float:
    """A level just above the air's noise floor in a smoothed image: the median of the voxels
    below Otsu's threshold (SimpleITK; mostly air) + ``AIR_FLOOR_SPREADS`` robust SDs of them."""
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(256)
    otsu.Execute(sitk.GetImageFromArray(np.ascontiguousarray(smooth, dtype=np.float32)))
    below = smooth[smooth < otsu.GetThreshold()]
    if below.size == 0:
        return float(otsu.GetThreshold())
    median = float(np.median(below))
    return median + AIR_FLOOR_SPREADS * MAD_TO_SD * float(np.median(np.abs(below - median)))


def _farther_than_margin(mask: np.ndarray, spacing_mm) -> np.ndarray:
    """Voxels farther than ``AIR_MARGIN_MM`` from ``mask`` closed (2 iterations) and hole-filled."""
    closed = ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=2) | mask)
    return ndi.distance_transform_edt(~closed, sampling=spacing_mm) > AIR_MARGIN_MM


def snr_native(native: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> float:
    """Mean foreground intensity / std of the air around the head, on the native grid (unitless;
    definition in the module docstring)."""
    native = _check_volume(native, "native")
    sample, fg, air = head_and_air(native, _zooms(zooms))
    if float(sample.min()) == float(sample.max()):
        raise MetricUndefined("native image is constant (no foreground or air to tell apart)")
    return float(sample[fg].mean()) / air_std(sample, fg, air)


def air_std(sample: np.ndarray, fg: np.ndarray, air: np.ndarray) -> float:
    """Standard deviation of the air (:func:`head_and_air`'s outputs). Raises
    :class:`MetricUndefined` when there is too little air, or when the air is zero-filled: its
    std is zero or below ``ZERO_AIR_FRACTION`` of the foreground mean (a background set to
    almost-zero by the reconstruction would otherwise read as an SNR of 10^13)."""
    n_air = np.count_nonzero(air)
    if n_air < MIN_AIR_VOXELS:
        raise MetricUndefined(f"too little air around the head ({n_air} voxels "
                              f"farther than {AIR_MARGIN_MM:g} mm from it)")
    std = float(sample[air].std(ddof=1))
    if std <= ZERO_AIR_FRACTION * float(sample[fg].mean()):
        raise MetricUndefined(f"air std is zero or almost ({std:.3g}: quantised or zero-filled "
                              "background)")
    return std


def _canny_edges(smooth_grad: np.ndarray, region: np.ndarray) -> np.ndarray:
    """3D Canny-like edges inside ``region`` from the gradient field of a smoothed image:
    non-maximum suppression along the gradient direction (rounded to the 26-neighbourhood), then
    hysteresis (high = 75th percentile of the maxima, low = half of it, 26-connected)."""
    mag = np.sqrt((smooth_grad**2).sum(axis=0))
    idx = np.flatnonzero(region & (mag > 0))
    if idx.size == 0:
        return np.zeros(region.shape, dtype=bool)
    shape = region.shape
    padded = np.pad(mag, 1)  # zero border: a voxel on the edge of the array compares with 0
    pshape = padded.shape
    coords = np.unravel_index(idx, shape)
    pidx = np.ravel_multi_index(tuple(c + 1 for c in coords), pshape)
    strides = np.array([pshape[1] * pshape[2], pshape[2], 1])
    unit = smooth_grad.reshape(3, -1)[:, idx] / mag.reshape(-1)[idx]
    offset = (np.rint(unit).astype(np.int64) * strides[:, None]).sum(axis=0)
    flat = padded.reshape(-1)
    centre = flat[pidx]
    is_max = (centre >= flat[pidx + offset]) & (centre >= flat[pidx - offset])
    maxima = np.zeros(mag.size, dtype=bool)
    maxima[idx[is_max]] = True
    maxima = maxima.reshape(shape)
    values = mag[maxima]
    if values.size == 0:
        return maxima
    high = float(np.percentile(values, EDGE_HIGH_PERCENTILE))
    weak = maxima & (mag >= EDGE_LOW_FRACTION * high)
    labels, n = ndi.label(weak, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return weak
    strong_labels = np.unique(labels[weak & (mag >= high)])
    keep = np.zeros(n + 1, dtype=bool)
    keep[strong_labels] = True
    keep[0] = False
    return keep[labels]


def aes(image: np.ndarray, brain_mask: np.ndarray, zooms=(2.0, 2.0, 2.0),
        smooth: np.ndarray | None = None) -> float:
    """Average edge strength inside ``brain_mask`` (mm^-1, higher = sharper; definition in the
    module docstring). ``image`` is the registered image, ``zooms`` its voxel size in mm;
    ``smooth`` optionally the image already smoothed by a 1-voxel Gaussian (saves time)."""
    image = _check_volume(image, "registered").astype(np.float32, copy=False)
    zooms = _zooms(zooms)
    n_brain = int(brain_mask.sum())
    if n_brain < MIN_TISSUE_VOXELS:
        raise MetricUndefined(f"brain mask has {n_brain} voxels (< {MIN_TISSUE_VOXELS})")
    mean_brain = float(image[brain_mask].mean(dtype=np.float64))
    if not mean_brain > 0:
        raise MetricUndefined(f"mean brain intensity is not positive ({mean_brain:g})")
    if smooth is None:
        smooth = ndi.gaussian_filter(image, SMOOTHING_SIGMA_VOXELS)
    box = bounding_box(brain_mask, margin=2)  # the gradient needs one voxel around the brain
    edges = _canny_edges(sobel_gradient(smooth[box], zooms), brain_mask[box])
    n_edges = int(edges.sum())
    if n_edges < MIN_EDGE_VOXELS:
        raise MetricUndefined(f"only {n_edges} edge voxels in the brain (constant or empty image)")
    grad = sobel_gradient(image[box], zooms)
    strength = np.sqrt((grad[:, edges] ** 2).sum(axis=0))
    return float(strength.mean(dtype=np.float64)) / mean_brain


# ----------------------------------------------------------------------------- entry point

def _registered_inputs(registered, gm_prior, wm_prior) -> np.ndarray:
    registered = _check_volume(registered, "registered")
    if registered.shape != np.shape(gm_prior) or registered.shape != np.shape(wm_prior):
        raise MetricUndefined(f"registered image shape {registered.shape} differs from the "
                              f"template priors' {np.shape(gm_prior)}")
    registered = registered.astype(np.float32, copy=False)
    valid = registered[registered != 0]
    if valid.size == 0:
        raise MetricUndefined("registered image is empty (all voxels zero)")
    if float(valid.max()) == float(valid.min()):
        raise MetricUndefined("registered image is constant inside its field of view")
    return registered


def _attempt(name: str, func, metrics: dict, notes: dict) -> None:
    try:
        value = float(func())
        if not math.isfinite(value):
            raise MetricUndefined(f"{name} is not finite ({value})")
        metrics[name] = value
    except MetricUndefined as exc:
        metrics[name], notes[name] = NAN, exc.reason
    except Exception as exc:  # a metric must never take the scan's other results down
        LOGGER.warning("metric %s failed: %s", name, exc, exc_info=True)
        metrics[name], notes[name] = NAN, f"unexpected error: {exc.__class__.__name__}: {exc}"


def compute_metrics(registered: np.ndarray, gm_prior: np.ndarray, wm_prior: np.ndarray,
                    native: np.ndarray, native_zooms: tuple[float, float, float], *,
                    fov: np.ndarray | None = None) -> tuple[dict, dict]:
    """All four metrics of one scan.

    ``registered``: bias-corrected T1w resampled (affine) onto the 2 mm MNI template grid
    (99 x 117 x 95), arbitrary positive intensity scale, 0 outside the field of view;
    ``gm_prior`` / ``wm_prior``: template probability maps on the same grid in [0, 1]
    (:func:`load_priors`); ``native``: the raw scan reoriented to RAS (float32, original grid),
    ``native_zooms`` in mm. Either image may be ``None`` (its metrics are then NaN).
    ``fov`` (optional, keyword): boolean mask of the registered voxels filled from inside the scan
    (resample an array of ones with the same transform, keep > 0.999); without it the field of
    view is estimated from the zeros of ``registered`` (see :mod:`bids_qc.masks`).

    Returns ``(metrics, notes)``: ``metrics = {"snr", "nd_wgm", "aes", "tenengrad", "snr_native"}`` as floats
    (NaN where not computable) and ``notes = {metric: reason}`` for every NaN. Never raises.
    """
    metrics: dict = {}
    notes: dict = {}
    masks: Masks | None = None
    try:
        image = _registered_inputs(registered, gm_prior, wm_prior)
        masks = build_masks(image, gm_prior, wm_prior, template_affine(), fov=fov)
        LOGGER.debug("masks: %s", masks.info)
    except MetricUndefined as exc:
        for name in ("snr", "nd_wgm", "aes"):
            metrics[name], notes[name] = NAN, exc.reason
    except Exception as exc:
        LOGGER.warning("tissue/air masks failed: %s", exc, exc_info=True)
        for name in ("snr", "nd_wgm", "aes"):
            metrics[name], notes[name] = NAN, f"masks failed: {exc.__class__.__name__}: {exc}"
    if masks is not None:
        tpl_zooms = tuple(np.sqrt((template_affine()[:3, :3] ** 2).sum(axis=0)))
        _attempt("snr", lambda: snr(image, masks.wm, masks.air), metrics, notes)
        _attempt("nd_wgm", lambda: nd_wgm(image, masks.gm, masks.wm), metrics, notes)
        _attempt("aes", lambda: aes(image, masks.brain, tpl_zooms, masks.smooth), metrics, notes)
    _attempt("tenengrad", lambda: tenengrad(native, native_zooms), metrics, notes)
    _attempt("snr_native", lambda: snr_native(native, native_zooms), metrics, notes)
    return {name: metrics[name] for name in METRIC_NAMES}, notes


def metrics_of(pre) -> tuple[dict, dict]:
    """:func:`compute_metrics` of one preprocessed scan (:class:`bids_qc.preprocessing.Preprocessed`,
    made ``with_registered``): on its registered image with the template priors, or, when it was
    not registered (partial coverage), the native, reference-free metrics only (the others NaN)."""
    gm, wm = (None, None) if pre.registered is None else load_priors()
    return compute_metrics(pre.registered, gm, wm, pre.native, pre.native_zooms, fov=pre.fov)
