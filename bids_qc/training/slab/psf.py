"""A wider point-spread function on the native grid: the same head acquired less sharply.

Scanners differ in how sharp a T1w is (matrix, partial Fourier, reconstruction filters), and a
motion detector trained on one scanner can take a smoother scanner's clean scan for motion blur.
Here the scan's k-space is apodised, per axis, by a Fermi filter (the window MR reconstructions
use) whose cut-off gives an effective resolution of ``factor`` x the voxel size along that axis;
the image is the magnitude of the inverse transform.
"""
from __future__ import annotations

import numpy as np

FACTOR_RANGE = (1.0, 2.25)  # effective resolution / voxel size, drawn per axis
FERMI_WIDTH = 0.1  # roll-off width, as a fraction of the cut-off


def sample_psf(rng: np.random.Generator) -> dict:
    """Per-axis resolution factors (JSON-serialisable), drawn independently: isotropic and
    thick-slice-like (one coarse axis) smoothing both occur."""
    return {"factors": rng.uniform(*FACTOR_RANGE, 3).round(3).tolist()}


def fermi_window(n: int, factor: float) -> np.ndarray:
    """1D window over ``np.fft.fftfreq(n)`` (cycles/voxel) that keeps frequencies up to
    0.5 / ``factor`` and rolls off like a Fermi function."""
    k = np.abs(np.fft.fftfreq(n))
    cutoff = 0.5 / max(float(factor), 1.0)
    return 1.0 / (1.0 + np.exp((k - cutoff) / (FERMI_WIDTH * cutoff)))


def apply_psf(volume: np.ndarray, params: dict) -> np.ndarray:
    """``volume`` (any orientation; factors follow the array axes) with the wider PSF."""
    spectrum = np.fft.fftn(np.asarray(volume, np.float32))
    for axis, factor in enumerate(params["factors"]):
        shape = [1, 1, 1]
        shape[axis] = volume.shape[axis]
        spectrum *= fermi_window(volume.shape[axis], factor).reshape(shape)
    return np.abs(np.fft.ifftn(spectrum)).astype(np.float32)
