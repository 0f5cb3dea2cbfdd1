"""SimpleITK images from RAS arrays and back, resolution bounding, and the shipped template.

Arrays are float32, indexed (i, j, k) = (x, y, z) in RAS+ voxel order, as nibabel gives them;
SimpleITK works in LPS physical space.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

DATA_DIR = Path(__file__).resolve().parent / "data"
TEMPLATE_NAME = "MNI152NLin2009aSym"
WORKING_SPACING_MM = 1.5  # finer scans are resampled to this before N4/registration



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


def smooth_axes(img: sitk.Image, sigma_mm) -> sitk.Image:
    """Gaussian smoothing with one sigma (mm) per voxel axis; an axis whose sigma is 0 is left as
    it is. The same filter as ``SmoothingRecursiveGaussian`` (one recursive pass per axis), which
    refuses a zero sigma: an anisotropic scan (1 x 1 x 2 mm, 0.9 x 0.9 x 5 mm) is already at or
    above the target spacing along its thick axis and needs no smoothing there."""
    out = sitk.Cast(img, sitk.sitkFloat32)
    for axis, sigma in enumerate(sigma_mm):
        if sigma > 1e-6:
            out = sitk.RecursiveGaussian(out, float(sigma), False,
                                         sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    return out


def bound_resolution(img: sitk.Image, spacing_mm: float = WORKING_SPACING_MM) -> sitk.Image:
    """Smooth and resample images finer than ``spacing_mm`` to that spacing (speed, memory)."""
    spacing = np.array(img.GetSpacing())
    if spacing.min() >= spacing_mm - 1e-3:
        return img
    return resample_spacing(img, np.maximum(spacing, spacing_mm))


def resample_spacing(img: sitk.Image, spacing_mm, keep_corner: bool = False) -> sitk.Image:
    """``img`` on a grid of ``spacing_mm`` (per axis) with the same axes and extent: smoothed
    first along the axes that get coarser (Gaussian of FWHM sqrt(new^2 - old^2), as an
    acquisition at that resolution averages), then linear interpolation. The first voxel's centre
    stays where it is, or with ``keep_corner`` the corner of the field of view does (voxel centres
    then shift by half the change of voxel size)."""
    old = np.array(img.GetSpacing())
    spacing = np.asarray(spacing_mm, float)
    sigma = np.sqrt(np.maximum(spacing**2 - old**2, 0)) / 2.355
    smooth = smooth_axes(img, sigma)
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(img.GetSize(), old, spacing)]
    origin = np.array(img.GetOrigin())
    if keep_corner:
        direction = np.array(img.GetDirection()).reshape(3, 3)
        origin = origin + direction @ ((spacing - old) / 2)
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, tuple(map(float, origin)),
                         [float(s) for s in spacing], img.GetDirection(), 0.0, sitk.sitkFloat32)
