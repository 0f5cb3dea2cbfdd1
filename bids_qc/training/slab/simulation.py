"""Mild, realistic head motion for training the slab detector.

The published presets (2-8 degrees and mm) make ghosting that real scans rarely show; the motion
in real motion-vs-still pairs is sub-degree to a few degrees. Here the amplitude is drawn
log-uniformly from ``AMPLITUDE_RANGE`` (degrees and mm per axis, random sign), with 2-6
movements at random k-space times, and the k-space axis along which the movements are laid out
(the phase-encoding order) is drawn per image: TorchIO's ``Motion`` splits k-space along the
last array axis, so the volume is transposed to put the drawn axis last and back afterwards.
"""
from __future__ import annotations

import numpy as np
import torch
import torchio as tio

AMPLITUDE_RANGE = (0.3, 4.0)
MOVEMENTS = (2, 6)


def sample_motion(rng: np.random.Generator, amplitude: float | None = None) -> dict:
    """Parameters of one mild motion (JSON-serialisable)."""
    if amplitude is None:
        lo, hi = np.log(AMPLITUDE_RANGE)
        amplitude = float(np.exp(rng.uniform(lo, hi)))
    n = int(rng.integers(MOVEMENTS[0], MOVEMENTS[1] + 1))
    return {"amplitude": round(float(amplitude), 4),
            "degrees": rng.uniform(-amplitude, amplitude, (n, 3)).round(4).tolist(),
            "translation_mm": rng.uniform(-amplitude, amplitude, (n, 3)).round(4).tolist(),
            "times": np.sort(rng.uniform(0.05, 0.95, n)).round(4).tolist(),
            "kspace_axis": int(rng.integers(3))}


def apply_motion(volume: np.ndarray, affine: np.ndarray, params: dict) -> np.ndarray:
    """Apply ``params`` to ``volume`` (any orientation; ``affine`` gives its geometry)."""
    axis = int(params["kspace_axis"])
    order = [a for a in range(3) if a != axis] + [axis]
    moved = np.ascontiguousarray(np.transpose(volume, order), np.float32)
    permuted_affine = affine.copy()
    permuted_affine[:3, :3] = affine[:3, order]
    image = tio.ScalarImage(tensor=torch.from_numpy(moved)[None], affine=permuted_affine)
    transform = tio.Motion(degrees=np.asarray(params["degrees"]),
                           translation=np.asarray(params["translation_mm"]),
                           times=np.asarray(params["times"]), image_interpolation="linear")
    out = np.abs(transform(image).data[0].numpy())
    return np.ascontiguousarray(np.transpose(out, np.argsort(order))).astype(np.float32)
