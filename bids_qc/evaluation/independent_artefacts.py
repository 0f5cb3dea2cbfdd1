"""Scanner-space artefacts made by code that shares nothing with the training simulators.

A benchmark that scores a detector on images made by the code that trained it flatters it. Here
the same three artefacts are made another way, on the raw scan, before any preprocessing:

- **motion**: numpy/scipy only (no TorchIO, no SimpleITK). The head takes 2-6 rigid positions
  (rotation about the field-of-view centre with ``scipy.ndimage.affine_transform``, cubic
  spline), each position is Fourier transformed with ``numpy.fft``, and k-space is assembled
  from contiguous blocks of phase-encoding lines along a random voxel axis, in *random* order of
  acquisition (a position may cover the k-space centre or not: the ghosts differ from TorchIO's,
  which always keeps one position over the centre). Amplitudes: the published ranges as TorchIO's
  ``RandomMotion`` reads them, per axis: each of the three rotations and three translations of
  every moved position is drawn in the range (moderate 2-4 degrees / mm, severe 5-8), with a
  random sign. (Until 2026-12-07 the range bounded only the *largest* of the six, the others
  scaled from a Gaussian direction: that put this simulator's severe motion where the published
  moderate motion lies - mean displacement of a 70 mm head 7.9 mm against 6.3 mm - and its
  moderate motion below the published range, 3.6 mm.)
- **noise**: complex Gaussian noise added to the *k-space* of the image (thermal noise as the
  receiver adds it), then the magnitude; its level is set so that the white-matter SNR at the
  working resolution lands in the grade's band.
- **contrast**: a different curve from the power law: the intensities are compressed towards the
  white-matter level, ``out = WM * (I / WM) ** c`` (``c`` in [0.78, 0.95] moderate,
  [0.55, 0.72] severe), which lowers the WM/GM ratio as a poorer inversion time would.

Grades are then *measured* with the project's definitions (:mod:`bids_qc.scanner_space`: noise by
the SNR reached, contrast by the ND-WGM drop, motion by the damage it left), which are the
definitions of what a grade means, not a simulator. Motion's grade is the damage the image shows
(:func:`bids_qc.scanner_space.motion_damage` against the nearest still position of the head; the
amplitude class drawn stays in the record as ``asked``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bids_qc import scanner_space as ss
from bids_qc.record import ARTEFACTS
from bids_qc.training.data import GRADE_PROBS, draw_grades

MOTION_MM = {1: (2.0, 4.0), 2: (5.0, 8.0)}
CONTRAST_POWER = {1: (0.78, 0.95), 2: (0.55, 0.72)}
NOISE_SNR = {1: (34.0, 47.0), 2: (19.0, 26.0)}


def _rotation(angles_deg) -> np.ndarray:
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def move(data: np.ndarray, zooms, degrees, shift_mm) -> np.ndarray:
    """The volume after a rigid move of the head (rotation about the array centre), in voxels."""
    zooms = np.asarray(zooms, float)
    rot = _rotation(degrees)
    # voxel -> mm (scale), rotate, back: matrix acting on output voxel coordinates
    matrix = np.diag(1 / zooms) @ rot.T @ np.diag(zooms)
    centre = (np.asarray(data.shape) - 1) / 2
    offset = centre - matrix @ centre - np.asarray(shift_mm) / zooms
    return ndi.affine_transform(data, matrix, offset=offset, order=3, mode="constant", cval=0.0)


def motion(data, zooms, grade: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    low, high = MOTION_MM[grade]
    n = int(rng.integers(2, 7))
    axis = int(rng.integers(3))
    positions = [np.zeros(6)]
    for _ in range(n - 1):  # each rotation and translation in the range, random sign
        positions.append(rng.uniform(low, high, 6) * rng.choice([-1.0, 1.0], 6))
    # contiguous blocks of lines along ``axis``, acquired in a random order of positions
    edges = np.sort(rng.uniform(0.05, 0.95, n - 1))
    lines = data.shape[axis]
    bounds = np.r_[0, (edges * lines).astype(int), lines]
    order = rng.permutation(n)
    kspace = np.zeros(data.shape, complex)
    still = []  # the head held still at each position: what the image is compared with
    for block, pos_index in enumerate(order):
        pos = positions[pos_index]
        moved = data if not pos.any() else move(data, zooms, pos[:3], pos[3:])
        still.append(np.asarray(moved, np.float32))  # no copy: neither is changed later
        spectrum = np.fft.fftshift(np.fft.fftn(moved))
        sl = [slice(None)] * 3
        sl[axis] = slice(bounds[block], bounds[block + 1])
        kspace[tuple(sl)] = spectrum[tuple(sl)]
    out = np.abs(np.fft.ifftn(np.fft.ifftshift(kspace))).astype(np.float32)
    return out, {"positions": [p.round(3).tolist() for p in positions], "axis": axis,
                 "block_edges": edges.round(3).tolist(), "order": order.tolist(),
                 "damage": ss.motion_damage(out, still)}


def contrast(data, wm, grade: int, rng) -> tuple[np.ndarray, dict]:
    c = float(rng.uniform(*CONTRAST_POWER[grade]))
    return power_contrast(data, wm, c), {"power": round(c, 4)}


def power_contrast(data, wm, power: float) -> np.ndarray:
    """``data`` compressed towards its white-matter level (median in ``wm``):
    ``WM * (I / WM) ** power``."""
    level = float(np.median(data[wm]))
    return (level * (np.clip(data, 0, None) / level) ** power).astype(np.float32)


def kspace_noise(data, level: float, sigma0: float, reduction: float, grade: int,
                 rng) -> tuple[np.ndarray, dict]:
    """Complex noise in k-space with the image-domain sigma that brings the working-resolution
    SNR of a scan (WM ``level``, own air ``sigma0`` and averaging ``reduction`` of
    :func:`bids_qc.scanner_space.working_sigma`, both measured on the clean scan) into the band."""
    target_snr = float(rng.uniform(*NOISE_SNR[grade]))
    add = float(np.sqrt(max((level / target_snr) ** 2 - sigma0**2, 0.0))) / max(reduction, 1e-6)
    # unitary FFT: white image-domain noise of sigma has k-space sigma * sqrt(N) unnormalised
    k = np.fft.fftn(data)
    scale = add * np.sqrt(data.size)
    k = k + rng.normal(0, scale, data.shape) + 1j * rng.normal(0, scale, data.shape)
    return np.abs(np.fft.ifftn(k)).astype(np.float32), {"target_snr": round(target_snr, 2)}


def corrupt(scan: ss.NativeScan, grades: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict, dict]:
    """``scan`` (file voxel order) with the artefacts of ``grades``; returns the image, the
    measured grades and what was done. Order: motion, contrast, noise."""
    data, affine = scan.data.astype(np.float32), scan.affine
    zooms = ss.voxel_sizes(affine)
    wm, gm = ss.tissue_masks(data.shape, affine, scan.template_to_subject)
    sigma0, reduction = ss.working_sigma(data, affine)
    done, evidence = {}, {}
    if grades["motion"]:
        data, done["motion"] = motion(data, zooms, grades["motion"], rng)
        evidence["motion_damage"] = done["motion"]["damage"]
    if grades["contrast"]:
        before = ss.nd_wgm_native(data, wm, gm)
        data, done["contrast"] = contrast(data, wm, grades["contrast"], rng)
        evidence["contrast_drop"] = 1 - ss.nd_wgm_native(data, wm, gm) / before
    level = float(np.median(data[wm]))
    evidence["snr"] = level / sigma0 if sigma0 > 0 else float("inf")
    if grades["noise"]:
        data, done["noise"] = kspace_noise(data, level, sigma0, reduction, grades["noise"], rng)
        added = level / done["noise"]["target_snr"]
        evidence["snr"] = level / max(added, sigma0)
    applied = [{"artefact": "motion", "grade": grades["motion"]}] if grades["motion"] else []
    return data, ss.measured_grades(applied, evidence), {"done": done, "evidence": evidence}


def draw_image(scan: ss.NativeScan, seed: int, scan_index: int, image_index: int,
               probs=GRADE_PROBS) -> tuple[np.ndarray, dict, dict | None, dict]:
    """Image ``image_index`` of the ``scan_index``-th scan of a draw: image 0 is the clean scan,
    the others get grades drawn from ``probs`` and :func:`corrupt`. The generator is seeded with
    ``[seed, scan_index, image_index]``, so every benchmark drawing with one seed makes the same
    images. Returns ``(data, asked grades, measured grades or None for image 0, info)``."""
    rng = np.random.default_rng([seed, scan_index, image_index])
    if image_index == 0:
        return scan.data, dict.fromkeys(ARTEFACTS, 0), None, {"clean": True}
    asked = draw_grades(rng, probs)
    data, measured, info = corrupt(scan, asked, rng)
    return data, asked, measured, info

