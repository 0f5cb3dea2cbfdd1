"""Edge-preserving denoising on the native grid: the same acquisition as a vendor's filter leaves it.

Many scanners filter their magnitude images before storing them (UIH's clean scan has smooth,
non-zero air), and edge-preserving smoothing reads as motion to a detector trained on unfiltered
scans: a 3x3x3 median moves the shipped slab detector's logit on a clean IXI scan from -11.0 to
+0.8. Applied to both twins of a training pair, after the motion (the filter runs on the
reconstructed image, ghosts included), it shows the network filtered scans on both sides of the
label. Two filters, drawn at random, each blended with the unfiltered image by a random weight so
that mild and strong filtering both occur:

- ``median``: 3x3x3 median (:func:`scipy.ndimage.median_filter`);
- ``diffusion``: Perona-Malik gradient anisotropic diffusion (SimpleITK; its conductance is
  relative to the image's mean gradient, so the draw means the same for any intensity scale).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

FILTERS = ("median", "diffusion")
WEIGHT_RANGE = (0.5, 1.0)  # share of the filtered image in the blend
CONDUCTANCE_RANGE = (0.5, 2.0)
ITERATIONS_RANGE = (2, 6)  # inclusive
TIME_STEP = 0.0625  # the stable step of 3D diffusion on a unit grid


def sample_denoise(rng: np.random.Generator) -> dict:
    """One filter and its strength (JSON-serialisable)."""
    params = {"filter": FILTERS[int(rng.integers(len(FILTERS)))],
              "weight": round(float(rng.uniform(*WEIGHT_RANGE)), 3)}
    if params["filter"] == "diffusion":
        params["conductance"] = round(float(rng.uniform(*CONDUCTANCE_RANGE)), 3)
        params["iterations"] = int(rng.integers(ITERATIONS_RANGE[0], ITERATIONS_RANGE[1] + 1))
    return params


def _diffusion(volume: np.ndarray, conductance: float, iterations: int) -> np.ndarray:
    import SimpleITK as sitk  # ships with torchio

    image = sitk.GetImageFromArray(volume)  # unit spacing: the filter works in voxels
    out = sitk.GradientAnisotropicDiffusion(image, timeStep=TIME_STEP,
                                            conductanceParameter=conductance,
                                            numberOfIterations=iterations)
    return sitk.GetArrayFromImage(out)


def apply_denoise(volume: np.ndarray, params: dict) -> np.ndarray:
    """``volume`` filtered as ``params`` says (float32, same shape)."""
    volume = np.asarray(volume, np.float32)
    if params["filter"] == "median":
        filtered = ndimage.median_filter(volume, size=3)
    elif params["filter"] == "diffusion":
        filtered = _diffusion(volume, params["conductance"], params["iterations"])
    else:
        raise ValueError(f"unknown denoising filter {params['filter']!r}; expected one of {FILTERS}")
    weight = float(params["weight"])
    return (weight * filtered + (1.0 - weight) * volume).astype(np.float32)
