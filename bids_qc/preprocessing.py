"""Preprocessing of one T1w scan, in-process with SimpleITK (shipped with torchio).

Pipeline (every parameter is recorded): load and check -> reorient to RAS -> (bound the working
resolution) -> N4 bias-field correction -> affine registration to the MNI152 2009 symmetric template
(2 mm copy shipped in ``bids_qc/data``) -> resampling into the fixed model box -> intensity scaling
to the *reference scale* (99.5th percentile of the box = 255, the unit of the simulation presets) ->
normalisation to [0, 1] for the networks, as the model folder's manifest says (``ModelGrid``):
plain min-max, or min-max after clipping at the 99.5th percentile (as torchio ``RescaleIntensity``), which
makes the input independent of how long the scan's bright tail (vessels, fat) is.

Arrays are float32, indexed (i, j, k) = (x, y, z) in RAS+ voxel order, as nibabel gives them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_qc.exceptions import InvalidScanError, PreprocessingError
from bids_qc.images import (  # noqa: F401 (re-exported: the package's one preprocessing API)
    TEMPLATE_NAME,
    WORKING_SPACING_MM,
    bound_resolution,
    from_sitk,
    load_template,
    to_sitk,
)
from bids_qc.registration import register_affine, resample, transform_to_ras_matrix

LOGGER = logging.getLogger(__name__)
PREPROCESSING_VERSION = "3"
REFERENCE_PERCENTILE = 99.5
REFERENCE_VALUE = 255.0
MIN_EXTENT_MM = 100.0  # below this along any axis the scan is a slab: no registration, no verdict
MAX_EXTENT_MM = 600.0  # above this along any axis the header cannot describe a head scan
MAX_VOXELS = 512**3
CLIP_PERCENTILE = 99.5
# Intensity normalisations of the model input, by the name a manifest records ("input" ->
# "normalisation"). The first is what every model up to conv5fc3-ixi-v1.4 was trained with.
MINMAX = "min-max to [0, 1]"
CLIPPED_MINMAX = f"min-max to [0, 1] after clipping at the {CLIP_PERCENTILE:g}th percentile"
NORMALISATIONS = {"minmax": MINMAX, "clipped-minmax": CLIPPED_MINMAX}  # short names (CLI)


@dataclass(frozen=True)
class ModelGrid:
    """The fixed input the networks see: a box (MNI mm, RAS) of ``shape`` voxels of ``spacing``
    mm, its intensities normalised by ``normalisation`` (a value of :data:`NORMALISATIONS`)."""

    shape: tuple[int, int, int] = (64, 80, 64)
    spacing: float = 2.5
    origin: tuple[float, float, float] = (-78.75, -116.75, -68.75)  # centre of voxel 0, RAS mm
    normalisation: str = MINMAX

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS.values():
            raise ValueError(f"unknown input normalisation {self.normalisation!r}; "
                             f"known: {sorted(NORMALISATIONS.values())}")

    def normalise(self, volume: np.ndarray, clip_factor: float = 1.0) -> np.ndarray:
        """``volume`` (reference scale) -> the network input in [0, 1]. ``clip_factor`` (clipped
        min-max only) scales the clip level, i.e. the normalised brightness of the tissue."""
        if self.normalisation == CLIPPED_MINMAX:
            return clipped_minmax(volume, clip_factor=clip_factor)
        if clip_factor != 1.0:
            raise ValueError("a clip factor needs the clipped min-max normalisation")
        return minmax(volume)

    def at_spacing(self, spacing: float) -> ModelGrid:
        """The grid of the same box (same MNI extent, same normalisation) sampled every ``spacing`` mm:
        the box must be a whole number of voxels of ``spacing`` along each axis."""
        extent = [n * self.spacing for n in self.shape]
        if spacing <= 0 or any(round(e / spacing) < 1 or abs(round(e / spacing) * spacing - e) > 1e-6
                               for e in extent):
            raise ValueError(f"a {spacing:g} mm grid cannot tile the {'x'.join(f'{e:g}' for e in extent)} "
                             f"mm box of the model grid; choose a spacing that divides each side")
        shape = tuple(int(round(e / spacing)) for e in extent)
        start = [o - self.spacing / 2 for o in self.origin]
        return ModelGrid(shape, float(spacing), tuple(s + spacing / 2 for s in start), self.normalisation)

    @property
    def shape_text(self) -> str:
        """``"64x80x64"``: the shape as cache folders and messages name it."""
        return "x".join(map(str, self.shape))

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.spacing] * 3 + [1.0])
        aff[:3, 3] = self.origin
        return aff

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing_mm": self.spacing, "origin_ras_mm": list(self.origin),
                "space": TEMPLATE_NAME, "normalisation": self.normalisation}

    @classmethod
    def from_dict(cls, d: dict) -> ModelGrid:
        return cls(tuple(d["shape"]), float(d["spacing_mm"]), tuple(d["origin_ras_mm"]),
                   d.get("normalisation", MINMAX))


@dataclass
class Preprocessed:
    """Everything downstream needs from one scan."""

    native: np.ndarray  # RAS-reoriented raw image (float32)
    native_zooms: tuple
    scaled: np.ndarray | None = None  # model grid, reference scale (simulation unit)
    model_input: np.ndarray | None = None  # model grid, normalised to [0, 1] (grid.normalise)
    registered: np.ndarray | None = None  # 2 mm template grid, bias-corrected, reference scale
    fov: np.ndarray | None = None  # bool, template grid: inside the scan's field of view
    record: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)


# ----------------------------------------------------------------------------- loading

def load_scan(path) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Read ``path``, check it is a usable 3D image, reorient to RAS.

    Returns ``(data float32, affine 4x4, zooms mm)``. Raises :class:`InvalidScanError` naming
    the file and the problem (missing, dangling link, not a regular file, empty, unreadable,
    not gzip/NIfTI, truncated, not 3D, too large, singular or non-finite affine, > 1 % NaN or
    infinite voxels, intensities beyond float32, constant). Problems that do not stop the
    assessment (a few NaN voxels set to 0, no orientation codes, a sheared affine) are logged
    as warnings with ``extra={"scan_warning": text}`` so that callers can record them.
    Nothing is read before the size checks (a header claiming 10^13 voxels costs nothing).
    """
    import gzip
    import os
    import stat
    import zlib

    path = Path(path)

    def warn(text: str) -> None:
        LOGGER.warning("%s: %s", path, text, extra={"scan_warning": text})

    if path.is_symlink() and not path.exists():
        raise InvalidScanError(path, f"dangling symbolic link (its target {os.readlink(path)} "
                                     "does not exist)")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidScanError(path, "file does not exist") from None
    except OSError as exc:
        raise InvalidScanError(path, f"cannot access the file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidScanError(path, "not a regular file (a folder, named pipe or device); "
                                     "it cannot be read as an image")
    if info.st_size == 0:
        raise InvalidScanError(path, "file is empty (0 bytes)")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except PermissionError:
        raise InvalidScanError(path, f"Permission denied: the file is not readable by this user "
                                     f"(uid {os.getuid()}, file mode "
                                     f"{stat.filemode(info.st_mode)})") from None
    except OSError as exc:
        raise InvalidScanError(path, f"cannot read the file: {exc.strerror}") from None
    if path.name.endswith(".gz") and magic != b"\x1f\x8b":
        raise InvalidScanError(path, "named .gz but not gzip-compressed (an uncompressed NIfTI? "
                                     "rename it .nii or compress it)")
    try:
        img = nib.load(str(path))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidScanError(path, f"file is truncated or corrupt: {exc}") from None
    except Exception as exc:
        raise InvalidScanError(path, f"not a NIfTI image that can be read ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InvalidScanError(path, f"not a NIfTI image ({type(img).__name__})")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = shape[:3]
    if len(shape) < 3:
        raise InvalidScanError(path, f"a {len(shape)}D image (shape {shape}); a T1w scan must be 3D")
    if len(shape) > 3:
        volumes = int(np.prod(shape[3:]))
        raise InvalidScanError(path, f"a {len(shape)}D image with {volumes} volumes (shape {shape}); "
                                     "expected one 3D volume")
    if min(shape) < 2:
        raise InvalidScanError(path, f"image is not 3D (shape {shape})")
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > MAX_VOXELS:
        raise InvalidScanError(path, f"image too large ({shape} = {n_voxels:.3g} voxels, "
                                     f"limit {MAX_VOXELS:.3g})")
    if not path.name.endswith(".gz"):
        needed = int(img.header.get_data_offset()) + n_voxels * img.get_data_dtype().itemsize
        if info.st_size < needed:
            raise InvalidScanError(path, f"file is truncated: the header declares {needed} bytes "
                                         f"(header + voxels), the file holds {info.st_size}")
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        raise InvalidScanError(path, "affine (voxel-to-world matrix) is not finite (NaN or "
                                     "infinite values in the header's qform/sform)")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InvalidScanError(path, "affine (voxel-to-world matrix) is singular: a voxel axis "
                                     "has no length or two axes coincide, so there is no 3D geometry")
    if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
        warn("no orientation in the header (qform_code and sform_code are 0 or invalid): "
             "the image was placed from its voxel sizes only, left and right may be swapped")
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    shear = float(np.abs(columns.T @ columns - np.eye(3)).max())
    if shear > 1e-3:
        warn(f"the affine has a shear (voxel axes {np.degrees(np.arcsin(min(shear, 1.0))):.1f} "
             "degrees off perpendicular); the scan was processed with it")
    try:
        img = nib.as_closest_canonical(img)
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(img.dataobj, dtype=np.float32)
    except MemoryError:
        raise InvalidScanError(path, f"not enough memory to read {shape} voxels") from None
    except Exception as exc:
        raise InvalidScanError(path, f"file is truncated or corrupt: the voxel data cannot be "
                                     f"read ({exc})") from None
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum()) - n_nan
        stored = img.get_data_dtype()
        slope, _ = img.header.get_slope_inter()
        overflow = n_inf and (stored.kind in "iu" or stored.itemsize > 4
                              or (slope is not None and abs(slope) > 1))
        if overflow and stored.kind == "f":  # a float file may hold real infinities
            overflow = not np.isinf(np.asanyarray(img.dataobj.get_unscaled())).any()
        if overflow:
            what = (f"{n_inf} voxel intensities exceed the float32 range (|value| > 3.4e38; "
                    f"stored as {stored}" + (f" with scl_slope {slope:g}" if slope not in (None, 1)
                                             else "") + ")")
        else:
            what = " and ".join(t for t in (f"{n_nan} NaN" if n_nan else "",
                                            f"{n_inf} infinite" if n_inf else "") if t)
            what = f"{what} voxels of {data.size}"
        if n_nan == data.size:
            raise InvalidScanError(path, f"every voxel is NaN ({data.size} voxels)")
        if data.size - finite.sum() > 0.01 * data.size:
            raise InvalidScanError(path, f"{what} (more than 1 % of the image is not a number)")
        data = np.where(finite, data, 0).astype(np.float32)
        warn(f"{what}; these voxels were set to 0")
    lo, hi = float(data.min()), float(data.max())
    if hi - lo <= 0:
        if lo == 0:
            raise InvalidScanError(path, "all voxels are 0 (an empty image)")
        raise InvalidScanError(path, f"image is constant (all voxels = {lo:g})")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    extent = physical_extent_mm(data.shape, zooms)
    if max(extent) > MAX_EXTENT_MM:
        raise InvalidScanError(path, "implausible geometry: the header's voxel sizes "
                                     f"({' x '.join(f'{z:g}' for z in zooms)} mm) make a field of "
                                     f"view of {' x '.join(f'{e:.0f}' for e in extent)} mm, far "
                                     f"larger than a head (limit {MAX_EXTENT_MM:.0f} mm per axis); "
                                     "check the pixdim / affine of this file")
    return data, img.affine.astype(np.float64), zooms


def physical_extent_mm(shape, zooms) -> tuple[float, float, float]:
    return tuple(float(n * z) for n, z in zip(shape, zooms))


# ----------------------------------------------------------------------------- steps

def n4_correct(img: sitk.Image, shrink_mm: float = 8.0, iterations=(15, 15, 10),
               threads: int = 1) -> tuple[sitk.Image, dict]:
    """N4 bias-field correction fitted on a ~``shrink_mm`` copy, applied at full resolution."""
    shrink = max(1, int(round(shrink_mm / min(img.GetSpacing()))))
    positive = sitk.Cast(img, sitk.sitkFloat32) - float(sitk.GetArrayViewFromImage(img).min()) + 1e-3
    small = sitk.Shrink(positive, [shrink] * 3)
    mask = sitk.OtsuThreshold(small, 0, 1, 200)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.SetNumberOfThreads(threads)
    corrector.Execute(small, mask)
    log_bias = corrector.GetLogBiasFieldAsImage(positive)
    corrected = sitk.Cast(sitk.Cast(img, sitk.sitkFloat32) / sitk.Exp(log_bias), sitk.sitkFloat32)
    params = {"shrink_factor": shrink, "iterations": list(iterations), "mask": "otsu",
              "convergence_threshold": corrector.GetConvergenceThreshold()}
    return corrected, params


def minmax(volume: np.ndarray) -> np.ndarray:
    lo, hi = float(volume.min()), float(volume.max())
    if hi - lo <= 0:
        return np.zeros_like(volume, dtype=np.float32)
    return ((volume - lo) / (hi - lo)).astype(np.float32)


def clipped_minmax(volume: np.ndarray, percentile: float = CLIP_PERCENTILE,
                   clip_factor: float = 1.0) -> np.ndarray:
    """Min-max to [0, 1] after clipping at the ``percentile`` of all voxels, as torchio's
    ``RescaleIntensity(out_min_max=(0, 1), percentiles=(0, percentile))``: the brightest 0.5 %
    (vessels, fat, eyes) no longer sets the scale. A volume whose percentile is its minimum
    (almost empty) falls back to plain min-max, where torchio would return it unscaled.
    ``clip_factor`` moves the clip level to that multiple of the percentile (a training
    augmentation, :mod:`bids_qc.training.augment`; the app always uses 1)."""
    top = float(np.percentile(volume, percentile)) * clip_factor
    if top <= float(volume.min()):
        return minmax(volume)
    return minmax(np.minimum(volume, np.float32(top)))


def reference_scale(volume: np.ndarray) -> float:
    """Factor bringing the 99.5th percentile of the non-zero voxels to 255 (simulation unit)."""
    nz = volume[volume > 0]
    if nz.size == 0:
        return 1.0
    p = float(np.percentile(nz, REFERENCE_PERCENTILE))
    return REFERENCE_VALUE / p if p > 0 else 1.0


# ----------------------------------------------------------------------------- the whole chain

def preprocess(path, grid: ModelGrid = ModelGrid(), threads: int = 1,
               with_registered: bool = True) -> Preprocessed:
    """Run the full chain on ``path``. Slabs (extent < 100 mm on an axis) stop after loading
    with a warning: registration and the detectors cannot judge them."""
    t0 = time.perf_counter()
    data, affine, zooms = load_scan(path)
    load_time = time.perf_counter() - t0
    out = preprocess_volume(data, affine, zooms, grid=grid, threads=threads,
                            with_registered=with_registered, source=path)
    out.timings = {"load": load_time, **out.timings}
    return out


def _wm_snr(working: sitk.Image, transform: sitk.Transform) -> dict:
    """``{"value", "note"}``: :func:`bids_qc.wm_snr.wm_snr` (value None and the reason when it
    cannot be measured; it never fails the scan)."""
    from bids_qc.metrics import MetricUndefined
    from bids_qc.wm_snr import wm_snr

    try:
        return {"value": round(float(wm_snr(working, transform)), 3), "note": None}
    except MetricUndefined as exc:
        return {"value": None, "note": exc.reason}
    except Exception as exc:  # a measurement, never a reason to lose the scan
        return {"value": None, "note": f"{exc.__class__.__name__}: {exc}"}


def preprocess_volume(data: np.ndarray, affine: np.ndarray, zooms, grid: ModelGrid = ModelGrid(),
                      threads: int = 1, with_registered: bool = True,
                      transform: sitk.Transform | None = None, source="<array>") -> Preprocessed:
    """The chain after loading, on a RAS-reoriented float32 array (what :func:`load_scan` returns).

    ``transform`` (template -> subject, as registration returns it) skips the registration: the
    training data reuse the clean scan's transform for its simulated variants, whose heads did
    not move in world space (``tests/test_scanner_space.py`` bounds what that changes).
    """
    # ITK's default uses every core, and its rounding then depends on the thread count
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    out = Preprocessed(native=data, native_zooms=tuple(zooms))
    extent = physical_extent_mm(data.shape, zooms)
    out.record = {"version": PREPROCESSING_VERSION, "native_shape": list(data.shape),
                  "native_zooms_mm": list(zooms), "native_extent_mm": [round(e, 1) for e in extent],
                  "orientation": "RAS", "template": TEMPLATE_NAME, "model_grid": grid.to_dict()}
    if min(extent) < MIN_EXTENT_MM:
        out.warnings.append(
            f"partial coverage: the field of view is only {min(extent):.0f} mm along one axis "
            f"(needs >= {MIN_EXTENT_MM:.0f} mm for registration); the six registered detectors "
            "cannot judge this scan: no grades or tier (the slab motion detector and the native "
            "metrics still apply)")
        out.record["partial_coverage"] = True
        return out
    out.record["partial_coverage"] = False
    try:
        t = time.perf_counter()
        img = bound_resolution(to_sitk(data, affine))
        out.record["working_spacing_mm"] = list(img.GetSpacing())
        corrected, n4_params = n4_correct(img, threads=threads)
        out.timings["n4"] = time.perf_counter() - t
        out.record["n4"] = n4_params

        t = time.perf_counter()
        tpl, tpl_affine = load_template("T1w")
        if transform is None:
            transform, reg_params = register_affine(corrected, threads=threads)
        else:
            reg_params = {"reused": True}
        reg_params["template_to_subject_ras"] = transform_to_ras_matrix(transform)
        out.record["registration"] = reg_params
        out.timings["registration"] = time.perf_counter() - t
        t = time.perf_counter()
        out.record["wm_snr"] = _wm_snr(img, transform)
        out.timings["wm_snr"] = time.perf_counter() - t

        t = time.perf_counter()
        box = resample(corrected, transform, grid.shape, grid.affine)
        scale = reference_scale(box)
        out.scaled = box * np.float32(scale)
        out.model_input = grid.normalise(out.scaled)
        if with_registered:
            out.registered = resample(corrected, transform, tpl.shape, tpl_affine) * np.float32(scale)
            ones = sitk.Image(corrected.GetSize(), sitk.sitkFloat32) + 1.0
            ones.CopyInformation(corrected)
            out.fov = resample(ones, transform, tpl.shape, tpl_affine) > 0.999
        out.record["intensity"] = {"reference": f"p{REFERENCE_PERCENTILE} of box = {REFERENCE_VALUE:g}",
                                   "scale_factor": scale, "normalisation": grid.normalisation}
        out.timings["resample"] = time.perf_counter() - t
    except InvalidScanError:
        raise
    except Exception as exc:
        raise PreprocessingError(source, f"preprocessing failed: {exc}") from exc
    return out
