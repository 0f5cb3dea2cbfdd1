"""Batch augmentation for slab training (torch, in place of the scanner variety IXI lacks).

Geometry: in-plane zoom 0.8-1.15 (heads fill the field of view differently), rotation +-8 deg,
shift +-8 %; intensity: gamma exp(+-0.35), optionally (``contrast_fraction`` of images) a random
monotone tone curve (:func:`tone_curve`: T1 contrast differs between sequences and field
strengths, and none of that is motion), and in 30 % of images Rician noise up to 8 % of the
bright level (so noise alone does not read as motion); the left/right order of the three slices
is flipped at random. Optionally (:func:`air_floor`, ``air_fraction`` of still/moved pairs) the
air is raised to a smooth non-zero floor, the same for both twins, as scanners that store filtered
air leave it (the United Imaging scan of the shared data: about 3 % of the bright level).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

# knots of the tone curve, in units of the triplet's normalised bright level (slices.normalise)
CURVE_KNOTS = (0.0, 0.15, 0.35, 0.55, 0.75, 1.0, 1.5)
CURVE_SPREAD = 0.8  # log-range of each segment's slope
AIR_LEVEL = (0.005, 0.05)  # air floor, in units of the triplet's normalised bright level
AIR_TEXTURE = (0.0, 0.8)  # relative variation of the floor (std of its blobs / level)
AIR_BLOB_PX = (1.0, 4.0)  # blob size (Gaussian sigma, 2 mm pixels)


def tone_curve(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random monotone piecewise-linear intensity map per image of ``x`` (N, C, H, W) that
    keeps 0 at 0 and the bright level (1) at 1: segment slopes vary by exp(+-``CURVE_SPREAD``/2),
    so grey/white/CSF levels move relative to each other as they do between T1 sequences."""
    knots = torch.tensor(CURVE_KNOTS, dtype=x.dtype)
    widths = np.diff(CURVE_KNOTS)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        rise = widths * np.exp(rng.uniform(-CURVE_SPREAD / 2, CURVE_SPREAD / 2, widths.size))
        values = np.concatenate([[0.0], np.cumsum(rise)])
        values = values / values[CURVE_KNOTS.index(1.0)]
        values = torch.tensor(values, dtype=x.dtype)
        v = x[i].clamp(0, knots[-1])
        seg = torch.bucketize(v, knots[1:-1])  # 0 .. len(knots) - 2
        t = (v - knots[seg]) / (knots[seg + 1] - knots[seg])
        out[i] = values[seg] + t * (values[seg + 1] - values[seg])
    return out


def smooth_field(noise: np.ndarray, sigma) -> np.ndarray:
    """White ``noise`` Gaussian-filtered by ``sigma`` (pixels, per axis or one for all) and scaled
    to unit standard deviation: the texture of an air floor."""
    field = ndimage.gaussian_filter(noise, sigma)
    return field / max(float(field.std()), 1e-6)


def air_floor(x: torch.Tensor, rng: np.random.Generator, fraction: float) -> torch.Tensor:
    """``x`` (N, C, H, W), images in still/moved twin order (0-1, 2-3, ...), with ``fraction`` of
    the pairs given one smooth floor each: every pixel below it is raised to it (air, not head:
    the floor is at most 5 % of the bright level), the same floor for both twins."""
    x = x.clone()
    for pair in np.flatnonzero(rng.random(x.shape[0] // 2) < fraction):
        blobs = smooth_field(rng.normal(0, 1, x.shape[1:]), (0, *[rng.uniform(*AIR_BLOB_PX)] * 2))
        level = rng.uniform(*AIR_LEVEL)
        floor = level * np.clip(1 + rng.uniform(*AIR_TEXTURE) * blobs, 0, None)
        floor = torch.from_numpy(floor.astype(np.float32))
        x[2 * pair:2 * pair + 2] = torch.maximum(x[2 * pair:2 * pair + 2], floor)
    return x


def augment(x: torch.Tensor, rng: np.random.Generator, contrast_fraction: float = 0.0) -> torch.Tensor:
    n = x.shape[0]
    zoom = rng.uniform(0.8, 1.15, n)
    angle = np.deg2rad(rng.uniform(-8, 8, n))
    shift = rng.uniform(-0.08, 0.08, (n, 2))
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0] = np.cos(angle) / zoom
    theta[:, 0, 1] = -np.sin(angle) / zoom
    theta[:, 1, 0] = np.sin(angle) / zoom
    theta[:, 1, 1] = np.cos(angle) / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.from_numpy(np.exp(rng.uniform(-0.35, 0.35, n)).astype(np.float32))
    x = x.clamp_min(0).pow(gamma.view(-1, 1, 1, 1))
    if contrast_fraction > 0:  # drawn only when asked for: runs without it keep their draws
        curved = torch.from_numpy(rng.random(n) < contrast_fraction)
        if curved.any():
            x[curved] = tone_curve(x[curved], rng)
    noisy = rng.random(n) < 0.3
    if noisy.any():
        sigma = torch.from_numpy((rng.uniform(0.0, 0.08, n) * noisy).astype(np.float32)).view(-1, 1, 1, 1)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        real = x + sigma * torch.randn(x.shape, generator=g)
        imag = sigma * torch.randn(x.shape, generator=g)
        x = torch.sqrt(real * real + imag * imag)
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x[flip] = x[flip].flip(1)
    return x


def soft_target(amplitude: float) -> float:
    """Motion target: 0 for a still scan, ramping to 1 at 1 deg/mm (sub-threshold motion is barely
    visible at 2 mm, so it is not asked to be called motion with full confidence)."""
    return float(min(max((amplitude - 0.2) / 0.8, 0.0), 1.0)) if amplitude > 0 else 0.0

