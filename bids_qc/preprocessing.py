"""Preprocessing of one T1w scan, in-process with SimpleITK (shipped with torchio).

Pipeline (every parameter is recorded): load and check -> reorient to RAS -> (bound the working
resolution) -> N4 bias-field correction -> affine registration to the MNI152 2009 symmetric template
(2 mm copy shipped in ``bids_qc/data``) -> resampling into the fixed model box -> intensity scaling
to the *reference scale* (99.5th percentile of the box = 255, the unit of the simulation presets) ->
min-max normalisation to [0, 1] for the networks.

Arrays are float32, indexed (i, j, k) = (x, y, z) in RAS+ voxel order, as nibabel gives them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from bids_qc.exceptions import InvalidScanError, PreprocessingError

LOGGER = logging.getLogger(__name__)
DATA_DIR = Path(__file__).resolve().parent / "data"
TEMPLATE_NAME = "MNI152NLin2009aSym"
PREPROCESSING_VERSION = "2"
REFERENCE_PERCENTILE = 99.5
REFERENCE_VALUE = 255.0
MIN_EXTENT_MM = 100.0  # below this along any axis the scan is a slab: no registration, no verdict
MAX_VOXELS = 512**3
WORKING_SPACING_MM = 1.5  # finer scans are resampled to this before N4/registration


@dataclass(frozen=True)
class ModelGrid:
    """The fixed box (MNI mm, RAS) the networks see: ``shape`` voxels of ``spacing`` mm."""

    shape: tuple[int, int, int] = (64, 80, 64)
    spacing: float = 2.5
    origin: tuple[float, float, float] = (-78.75, -116.75, -68.75)  # centre of voxel 0, RAS mm

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([self.spacing] * 3 + [1.0])
        aff[:3, 3] = self.origin
        return aff

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "spacing_mm": self.spacing, "origin_ras_mm": list(self.origin),
                "space": TEMPLATE_NAME}

    @classmethod
    def from_dict(cls, d: dict) -> ModelGrid:
        return cls(tuple(d["shape"]), float(d["spacing_mm"]), tuple(d["origin_ras_mm"]))


@dataclass
class Preprocessed:
    """Everything downstream needs from one scan."""

    native: np.ndarray  # RAS-reoriented raw image (float32)
    native_zooms: tuple
    scaled: np.ndarray | None = None  # model grid, reference scale (simulation unit)
    model_input: np.ndarray | None = None  # model grid, min-max normalised to [0, 1]
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
    return data, img.affine.astype(np.float64), zooms


def physical_extent_mm(shape, zooms) -> tuple[float, float, float]:
    return tuple(float(n * z) for n, z in zip(shape, zooms))


# ----------------------------------------------------------------------------- numpy <-> SimpleITK

def to_sitk(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """RAS-indexed array + RAS affine -> SimpleITK image (LPS physical space)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = affine[:3, :3] / zooms
    flip = np.diag([-1.0, -1.0, 1.0])
    img.SetSpacing(tuple(float(z) for z in zooms))
    img.SetDirection(tuple((flip @ direction).ravel()))
    img.SetOrigin(tuple(float(v) for v in flip @ affine[:3, 3]))
    return img


def from_sitk(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float32, copy=False)


def grid_reference(shape, affine) -> sitk.Image:
    """An empty SimpleITK image describing a RAS grid (for resampling onto it)."""
    return to_sitk(np.zeros(shape, np.float32), affine)


@lru_cache(maxsize=4)
def load_template(name: str = "T1w") -> tuple[np.ndarray, np.ndarray]:
    """The shipped 2 mm template image (``T1w``, ``label-GM_probseg``, ``label-WM_probseg``)."""
    img = nib.load(str(DATA_DIR / f"tpl-{TEMPLATE_NAME}_res-2_{name}.nii.gz"))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


# ----------------------------------------------------------------------------- steps

def bound_resolution(img: sitk.Image, spacing_mm: float = WORKING_SPACING_MM) -> sitk.Image:
    """Smooth and resample images finer than ``spacing_mm`` to that spacing (speed, memory)."""
    spacing = np.array(img.GetSpacing())
    if spacing.min() >= spacing_mm - 1e-3:
        return img
    new_spacing = np.maximum(spacing, spacing_mm)
    sigma = np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0)) / 2.355
    smooth = sitk.SmoothingRecursiveGaussian(img, [float(s) for s in sigma])
    size = [int(round(n * s / t)) for n, s, t in zip(img.GetSize(), spacing, new_spacing)]
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                         [float(s) for s in new_spacing], img.GetDirection(), 0.0, sitk.sitkFloat32)


def n4_correct(img: sitk.Image, shrink_mm: float = 6.0, iterations=(20, 20, 10),
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


@lru_cache(maxsize=1)
def head_template() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic *head* target built from the (skull-stripped) MNI brain template.

    The shipped MNI T1w has no skull, so mutual information between a full-head scan and it
    is maximised by squeezing the whole head into the brain. Around the brain we therefore draw
    the layers every T1w head has, by distance from the brain surface: CSF (0-3 mm, dark),
    skull (3-9 mm, darker), scalp (9-15 mm, bright). Head-to-head registration then aligns
    the brain. Intensities are relative to the template's 90th percentile in the brain.
    """
    from scipy import ndimage

    tpl, affine = load_template("T1w")
    brain = ndimage.binary_fill_holes(tpl > 5)
    spacing = float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[0])
    dist = ndimage.distance_transform_edt(~brain) * spacing
    level = float(np.percentile(tpl[brain], 90))
    head = tpl.copy()
    for low, high, value in ((0, 3, 0.15), (3, 9, 0.08), (9, 15, 0.8)):
        head[(dist > low) & (dist <= high)] = value * level
    return ndimage.gaussian_filter(head, 0.7).astype(np.float32), affine


def _run_registration(moving, fixed, transform, iterations, shrink, smooth, threads, seed):
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
        gradientMagnitudeTolerance=1e-6, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(smooth))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.SetNumberOfThreads(threads)
    reg.Execute(fixed, moving)
    return transform, reg


PITCH_STARTS_DEG = (-12.0, 0.0, 12.0)


def register_affine(moving: sitk.Image, fixed: sitk.Image, threads: int = 1,
                    seed: int = 1) -> tuple[sitk.Transform, dict]:
    """Affine (12 dof) registration of a head scan to the synthetic head template.

    Stage 1, similarity (7 dof) at 8 then 4 mm from three pitch starts (-12, 0, +12 degrees about
    the left-right axis, centres of mass aligned); the best Mattes MI wins. Stage 2, affine at
    8 then 4 mm (template voxels 2 mm, shrink 4 and 2). Returns the transform mapping template
    points to subject points (as ITK resamples) and the recorded parameters.
    """
    tpl, _ = load_template("T1w")
    brain = tpl > 5

    def brain_correlation(transform) -> float:
        """Pearson correlation with the template inside its brain: the selection criterion."""
        moved = sitk.GetArrayFromImage(  # a copy: a view would outlive the temporary image
            sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        return float(np.corrcoef(moved.transpose(2, 1, 0)[brain], tpl[brain])[0, 1])

    candidates = []
    for pitch in PITCH_STARTS_DEG:
        sim = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
        sim.SetRotation((1.0, 0.0, 0.0), float(np.deg2rad(pitch)))
        sim, _ = _run_registration(moving, fixed, sim, 40, (8, 4), (4.0, 2.0), threads, seed)
        candidates.append((brain_correlation(sim), pitch, sim))
    cc_sim, pitch, sim = max(candidates, key=lambda c: c[0])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(sim.GetCenter())
    affine.SetMatrix(sim.GetMatrix())
    affine.SetTranslation(sim.GetTranslation())
    start = sitk.AffineTransform(affine)
    affine, reg = _run_registration(moving, fixed, affine, 60, (4, 2), (2.0, 1.0), threads, seed)
    cc = brain_correlation(affine)
    if cc < cc_sim:  # the affine stage made things worse: keep the similarity solution
        affine, cc = start, cc_sim
    params = {"target": "MNI152NLin2009aSym brain + synthetic CSF/skull/scalp layers",
              "metric": "MattesMI", "bins": 32, "sampling": 0.2, "sampling_seed": seed,
              "stage1": {"transform": "similarity", "pitch_starts_deg": list(PITCH_STARTS_DEG),
                         "chosen_pitch_deg": pitch, "shrink": [8, 4], "iterations": 40,
                         "brain_correlation": round(cc_sim, 4)},
              "stage2": {"transform": "affine", "shrink": [4, 2], "smoothing_mm": [2.0, 1.0],
                         "iterations": reg.GetOptimizerIteration()},
              "final_metric": reg.GetMetricValue(), "brain_correlation": round(cc, 4),
              "stop": reg.GetOptimizerStopConditionDescription()}
    return affine, params


def transform_to_ras_matrix(transform: sitk.Transform) -> list[list[float]]:
    """4x4 matrix mapping template RAS mm to subject RAS mm (the affine found by registration)."""
    points = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0], [0, 0, 50]], float)
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    lps = np.eye(4)
    lps[:3, :] = np.linalg.lstsq(np.c_[points, np.ones(4)], mapped, rcond=None)[0].T
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return (flip @ lps @ flip).round(6).tolist()


def resample(moving: sitk.Image, transform: sitk.Transform, shape, affine) -> np.ndarray:
    ref = grid_reference(shape, affine)
    out = sitk.Resample(moving, ref, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return from_sitk(out)


def minmax(volume: np.ndarray) -> np.ndarray:
    lo, hi = float(volume.min()), float(volume.max())
    if hi - lo <= 0:
        return np.zeros_like(volume, dtype=np.float32)
    return ((volume - lo) / (hi - lo)).astype(np.float32)


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
    # ITK's default uses every core, and its rounding then depends on the thread count
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    data, affine, zooms = load_scan(path)
    out = Preprocessed(native=data, native_zooms=zooms)
    out.timings["load"] = time.perf_counter() - t0
    extent = physical_extent_mm(data.shape, zooms)
    out.record = {"version": PREPROCESSING_VERSION, "native_shape": list(data.shape),
                  "native_zooms_mm": list(zooms), "native_extent_mm": [round(e, 1) for e in extent],
                  "orientation": "RAS", "template": TEMPLATE_NAME, "model_grid": grid.to_dict()}
    if min(extent) < MIN_EXTENT_MM:
        out.warnings.append(
            f"partial coverage: the field of view is only {min(extent):.0f} mm along one axis "
            f"(needs >= {MIN_EXTENT_MM:.0f} mm for registration); the detectors cannot judge this scan")
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
        fixed = to_sitk(head_template()[0], tpl_affine)
        transform, reg_params = register_affine(corrected, fixed, threads=threads)
        reg_params["template_to_subject_ras"] = transform_to_ras_matrix(transform)
        out.record["registration"] = reg_params
        out.timings["registration"] = time.perf_counter() - t

        t = time.perf_counter()
        box = resample(corrected, transform, grid.shape, grid.affine)
        scale = reference_scale(box)
        out.scaled = box * np.float32(scale)
        out.model_input = minmax(out.scaled)
        if with_registered:
            out.registered = resample(corrected, transform, tpl.shape, tpl_affine) * np.float32(scale)
            ones = sitk.Image(corrected.GetSize(), sitk.sitkFloat32) + 1.0
            ones.CopyInformation(corrected)
            out.fov = resample(ones, transform, tpl.shape, tpl_affine) > 0.999
        out.record["intensity"] = {"reference": f"p{REFERENCE_PERCENTILE} of box = {REFERENCE_VALUE:g}",
                                   "scale_factor": scale, "normalisation": "min-max to [0, 1]"}
        out.timings["resample"] = time.perf_counter() - t
    except InvalidScanError:
        raise
    except Exception as exc:
        raise PreprocessingError(path, f"preprocessing failed: {exc}") from exc
    return out
