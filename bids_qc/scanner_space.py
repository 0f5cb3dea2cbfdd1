"""Artefacts made where the scanner makes them: on the scan's own voxel grid, before preprocessing.

The box simulator (:mod:`bids_qc.simulation`) corrupts the preprocessed 2.5 mm model box; real
motion, noise and contrast loss happen at acquisition, on the scanner's grid, and are then partly
averaged away by bias correction and resampling. Here a clean scan, as stored in its file
(voxel order = the scanner's k-space axes), is first made to look like another site
(:func:`sample_site`), then corrupted (:func:`sample_artefacts`), and the result goes through the
app's own preprocessing (:func:`bids_qc.preprocessing.preprocess_volume`): a training input is an
input the app could produce at inference.

Grades are defined by what a reader sees, measured on the native grid, not by a knob alone:

- **noise**: by the white-matter SNR reached, ``WM level / sigma`` with sigma the Rician noise
  level of the air (the scan's own and the added, measured), both at the app's working
  resolution (voxels of at least 1.5 mm, as the app averages finer scans before N4, so that a
  0.5 mm scan is not called noisy for its small voxels; the noise itself is added on the scan's
  own grid). Grade 2 below
  ``NOISE_SNR_LIMITS[1]`` (27.5), grade 1 below ``NOISE_SNR_LIMITS[0]`` (52), else 0. The
  published clinical calibration is SNR ~74 clean, ~38-44 moderate, ~25-27 severe: a scan that
  is already noisier than 52 is grade 1 whatever was added. An SNR is a ratio of intensities, so
  the definition does not depend on a scanner's units.
- **contrast**: by the relative drop of ND-WGM = (WM - GM) / (WM + GM) that the gamma causes,
  measured on the native grid (tissue levels from the template priors pulled into the scan).
  A power law ``I**gamma`` turns a WM/GM ratio r into r**gamma, so the drop is ~1 - gamma for
  any scanner, field strength and intensity scaling; grade 2 from ``CONTRAST_DROP_LIMITS[1]``
  (22 %), grade 1 from ``CONTRAST_DROP_LIMITS[0]`` (3 %). The gamma ranges are the published
  ones (log gamma [-0.2, -0.05] / [-0.45, -0.3], drops ~5-18 % / ~26-36 %).
- **motion**: made at the published amplitudes (per axis, per movement: 2-4 deg / 2-4 mm
  moderate, 5-8 severe) in one of three timing patterns along one of the scan's own voxel axes
  (the k-space segments of TorchIO's ``Motion``): ``jumps`` (TorchIO's evenly spaced sudden
  moves), ``drift`` (8 small steps growing to the amplitude) and ``nodding`` (6 moves alternating
  between the amplitude and a tenth of it). Graded by the damage the image shows
  (:func:`motion_damage`: relative difference from the head held still): grade 2 from
  ``MOTION_DAMAGE_SEVERE`` (0.273), else grade 1. The amplitude does not say how an image looks
  (the same move over the outer k-space lines leaves little, over the centre a lot), and severe
  motion graded by amplitude was not learnable from the model box (model card); the damage is a
  ratio of intensities measured on the scanner's grid, so it means the same on every scanner.

Site randomisation (no artefact, label unchanged): a smooth multiplicative bias field, the voxel
size (0.8-1.5 mm, or thick slices of 3-5 mm along one axis), the field of view (neck and crown
cropped), the intensity scale and the bit depth (8/12/16-bit quantisation).
"""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from nibabel.affines import voxel_sizes

from bids_qc.grading import grade_from
from bids_qc.images import from_sitk, load_template, to_sitk
from bids_qc.wm_snr import NOISE_SNR_LIMITS, air_sigma

NOISE_SNR_TARGETS = {1: (33.0, 48.0), 2: (18.0, 27.0)}  # drawn uniformly (published 38-44 / 25-27)
CONTRAST_DROP_LIMITS = (0.03, 0.22)
CONTRAST_LOG_GAMMA = {1: (-0.2, -0.05), 2: (-0.45, -0.3)}
MOTION_RANGES = {1: (2.0, 4.0), 2: (5.0, 8.0)}  # degrees and mm per axis per movement
MOTION_PATTERNS = ("jumps", "drift", "nodding")
# damage (motion_damage) from which motion is grade 2: the Youden point between the published
# amplitude classes on this simulator's moved images, fixed in a development run (2026-12-07)
# before any evaluation draw it was scored on (seeds 2045+)
MOTION_DAMAGE_SEVERE = 0.273


@dataclass
class NativeScan:
    """A clean scan as stored (voxel order of the file) and what its grades are measured with."""

    data: np.ndarray  # float32, the file's voxel order
    affine: np.ndarray  # 4x4, the file's
    template_to_subject: list  # 4x4 RAS matrix from the clean scan's registration
    name: str = ""
    site: str = ""


# ----------------------------------------------------------------------------- measurements

def tissue_masks(shape, affine, template_to_subject, level: float = 0.9):
    """WM and GM masks (bool, ``shape``) of a scan: the template priors > ``level`` pulled onto
    the scan's grid through the registration (template -> subject RAS)."""
    from bids_qc.registration import ras_matrix_to_transform

    inverse = ras_matrix_to_transform(template_to_subject).GetInverse()
    ref = to_sitk(np.zeros(shape, np.float32), affine)
    masks = []
    for name in ("label-WM_probseg", "label-GM_probseg"):
        prior, prior_affine = load_template(name)
        moved = sitk.Resample(to_sitk(prior, prior_affine), ref, inverse, sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
        masks.append(from_sitk(moved) > level)
    return masks[0], masks[1]


def motion_damage(image: np.ndarray, still: list[np.ndarray]) -> float:
    """What motion did to ``image`` as a reader would see it: the relative root-sum-square
    difference from the nearest of the head's still positions ``still``, ``min_p ||image - p|| /
    ||p||`` over the whole field of view (ghosts in the air count). A move confined to the outer
    k-space lines leaves little; the same amplitude over the k-space centre leaves a lot, so the
    amplitude alone does not say how damaged an image looks."""
    return float(min(np.linalg.norm(image - p) / max(np.linalg.norm(p), 1e-12) for p in still))


def nd_wgm_native(data: np.ndarray, wm: np.ndarray, gm: np.ndarray) -> float:
    w, g = float(np.median(data[wm])), float(np.median(data[gm]))
    return abs(w - g) / (w + g) if w + g > 0 else float("nan")


# ----------------------------------------------------------------------------- site randomisation

def sample_site(rng: np.random.Generator, zooms) -> dict:
    """Parameters of one site-like variation of a scan (JSON-serialisable). The acquisition grid
    is drawn at 1.3-2 mm (CPU budget: motion at 1 mm costs ~9 s a scan), or with thick slices
    (3-5 mm along one axis, 1.2-1.6 mm in plane) one time in four."""
    zooms = np.asarray(zooms, float)
    if rng.random() < 0.25:
        spacing = np.full(3, rng.uniform(1.2, 1.6))
        spacing[int(rng.integers(3))] = rng.uniform(3.0, 5.0)
    else:
        spacing = np.full(3, rng.uniform(1.3, 2.0))
    spacing = np.maximum(spacing, zooms * 0.5)  # never invent more than 2x the detail
    return {"spacing_mm": spacing.round(3).tolist(),
            "crop_mm": rng.uniform(0, [35, 10, 10, 10, 10, 15]).round(1).tolist(),
            "bias_coefficient": round(float(rng.uniform(0.0, 0.5)), 3),
            "bias_seed": int(rng.integers(2**31 - 1)),
            "scale": round(float(10 ** rng.uniform(-1.0, 2.0)), 4),
            "bits": int(rng.choice([8, 12, 16]))}


def resample_to(data, affine, spacing) -> tuple[np.ndarray, np.ndarray]:
    """``data`` on a grid of ``spacing`` mm with the same axes and the same corner of the field
    of view (:func:`bids_qc.images.resample_spacing`); returns the array and its RAS affine."""
    from bids_qc.images import resample_spacing

    zooms = voxel_sizes(affine)
    spacing = np.asarray(spacing, float)
    out = resample_spacing(to_sitk(data, affine), spacing, keep_corner=True)
    direction = np.asarray(affine)[:3, :3] / zooms
    new_affine = np.eye(4)
    new_affine[:3, :3] = direction * spacing
    new_affine[:3, 3] = np.asarray(affine)[:3, 3] + direction @ ((spacing - zooms) / 2)
    return from_sitk(out), new_affine


def crop_field_of_view(data, affine, crop_mm) -> tuple[np.ndarray, np.ndarray]:
    """Remove ``crop_mm`` (inferior, superior, then the two ends of the two other world axes)
    from the edges of the field of view, keeping at least 110 mm along every axis."""
    zooms = voxel_sizes(affine)
    slices, offset = [], np.zeros(3)
    axes_ras = np.abs(np.asarray(affine)[:3, :3]).argmax(axis=0)  # world axis of each voxel axis
    order = {2: (0, 1), 0: (2, 3), 1: (4, 5)}  # world axis -> entries of crop_mm
    for ax in range(3):
        n = data.shape[ax]
        lo_mm, hi_mm = (crop_mm[i] for i in order[int(axes_ras[ax])])
        if np.asarray(affine)[int(axes_ras[ax]), ax] < 0:  # voxel axis runs against the world axis
            lo_mm, hi_mm = hi_mm, lo_mm
        keep_mm = n * zooms[ax]
        budget = max(0.0, keep_mm - 110.0)
        lo_mm, hi_mm = min(lo_mm, budget / 2), min(hi_mm, budget / 2)
        lo, hi = int(lo_mm / zooms[ax]), int(hi_mm / zooms[ax])
        slices.append(slice(lo, n - hi))
        offset[ax] = lo
    new_affine = np.array(affine, float)
    new_affine[:3, 3] = np.asarray(affine)[:3, :3] @ offset + np.asarray(affine)[:3, 3]
    return data[tuple(slices)], new_affine


def apply_site(data, affine, params) -> tuple[np.ndarray, np.ndarray]:
    """One site-like variation (:func:`sample_site`) of a clean scan: resolution, field of view,
    bias field, intensity scale and bit depth (quantisation is :func:`quantise`, applied last,
    after the artefacts, as the scanner stores the image)."""
    data, affine = resample_to(data, affine, params["spacing_mm"])
    data, affine = crop_field_of_view(data, affine, params["crop_mm"])
    if params["bias_coefficient"] > 0:
        data = data * bias_field(data.shape, params["bias_coefficient"], params["bias_seed"])
    return (data * np.float32(params["scale"])).astype(np.float32), affine


def bias_field(shape, coefficient: float, seed: int, coarse: int = 4) -> np.ndarray:
    """TorchIO's ``RandomBiasField`` (order 3 polynomial, exp of it), computed on a grid
    ``coarse`` times coarser and interpolated up: the field is smooth, so this only saves time."""
    from scipy import ndimage as ndi

    small = [max(2, n // coarse) for n in shape]
    torch.manual_seed(seed)
    bias = tio.RandomBiasField(coefficients=coefficient, order=3)
    field = bias(tio.ScalarImage(tensor=torch.ones([1, *small]))).data[0].numpy()
    return ndi.zoom(field, [n / m for n, m in zip(shape, small)], order=1).astype(np.float32)


def quantise(data: np.ndarray, bits: int) -> np.ndarray:
    top = float(np.percentile(data, 99.99))
    if top <= 0:
        return data
    levels = 2**bits - 1
    return (np.round(np.clip(data, 0, top) / top * levels) * (top / levels)).astype(np.float32)


# ----------------------------------------------------------------------------- artefacts

def sample_artefacts(grades: dict, rng: np.random.Generator) -> list[dict]:
    """Parameters of the artefacts of ``grades`` ({artefact: 0|1|2}) in the scanner's space.
    Noise records its target SNR and contrast its gamma; the grades they reach are measured."""
    applied = []
    if grades.get("motion"):
        low, high = MOTION_RANGES[grades["motion"]]
        pattern = MOTION_PATTERNS[int(rng.integers(len(MOTION_PATTERNS)))]
        amp_deg = rng.uniform(low, high, 3) * rng.choice([-1.0, 1.0], 3)
        amp_mm = rng.uniform(low, high, 3) * rng.choice([-1.0, 1.0], 3)
        if pattern == "jumps":
            n = 4
            step = 1.0 / (n + 1)
            times = np.arange(1, n + 1) * step + rng.uniform(-0.3 * step, 0.3 * step, n)
            deg = rng.uniform(low, high, (n, 3)) * rng.choice([-1.0, 1.0], (n, 3))
            mm = rng.uniform(low, high, (n, 3)) * rng.choice([-1.0, 1.0], (n, 3))
        elif pattern == "drift":
            n = 8
            times = np.linspace(0.1, 0.9, n)
            ramp = (np.arange(1, n + 1) / n)[:, None]
            deg, mm = ramp * amp_deg, ramp * amp_mm
        else:  # nodding
            n = 6
            times = np.linspace(0.15, 0.85, n)
            swing = np.where(np.arange(n) % 2 == 0, 1.0, 0.1)[:, None]
            deg, mm = swing * amp_deg, swing * amp_mm
        applied.append({"artefact": "motion", "grade": int(grades["motion"]), "pattern": pattern,
                        "axis": int(rng.integers(3)), "degrees": deg.round(3).tolist(),
                        "translation_mm": mm.round(3).tolist(), "times": times.round(4).tolist()})
    if grades.get("contrast"):
        low, high = CONTRAST_LOG_GAMMA[grades["contrast"]]
        applied.append({"artefact": "contrast", "log_gamma": round(float(rng.uniform(low, high)), 4)})
    if grades.get("noise"):
        low, high = NOISE_SNR_TARGETS[grades["noise"]]
        applied.append({"artefact": "noise", "target_snr": round(float(rng.uniform(low, high)), 2),
                        "seed": int(rng.integers(2**31 - 1))})
    return applied


def apply_motion(data, affine, params) -> np.ndarray:
    """TorchIO ``Motion`` with k-space segments along voxel axis ``params["axis"]``."""
    axis = params["axis"]
    order = [a for a in range(3) if a != axis] + [axis]  # torchio segments the last axis
    moved_affine = np.array(affine, float)
    moved_affine[:, :3] = np.asarray(affine)[:, order]
    image = tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(data.transpose(order)))[None],
                            affine=moved_affine)
    motion = tio.Motion(degrees=np.asarray(params["degrees"]),
                        translation=np.asarray(params["translation_mm"]),
                        times=np.asarray(params["times"]), image_interpolation="linear")
    out = np.abs(motion(image).data[0].numpy())
    return out.transpose(np.argsort(order)).astype(np.float32)


def working_sigma(data, affine) -> tuple[float, float]:
    """``(air sigma at the app's working resolution, noise reduction factor)``: the scan as the
    app sees it before N4 (voxels of at least 1.5 mm, :func:`bids_qc.images.bound_resolution`),
    and by how much that averaging divides white noise of this grid (measured on a noise patch)."""
    from bids_qc.images import bound_resolution

    zooms = voxel_sizes(affine)
    working = from_sitk(bound_resolution(to_sitk(data, affine)))
    working_affine = np.array(affine, float)
    factor = np.asarray(working.shape) / np.asarray(data.shape)
    working_affine[:3, :3] = np.asarray(affine)[:3, :3] / factor
    sigma = air_sigma(working, voxel_sizes(working_affine))
    patch = np.random.default_rng(0).normal(0, 1, [min(n, 48) for n in data.shape]).astype(np.float32)
    patch_affine = np.diag(list(zooms) + [1.0])
    reduced = from_sitk(bound_resolution(to_sitk(patch, patch_affine)))
    inner = tuple(slice(n // 4, n - n // 4) for n in reduced.shape)
    return sigma, float(reduced[inner].std())


def apply_artefacts(data, affine, applied: list[dict], wm, gm) -> tuple[np.ndarray, dict]:
    """Apply ``applied`` (:func:`sample_artefacts`) in order motion, contrast, noise; returns the
    image and the measured grades' evidence (SNR reached at the working resolution, ND-WGM drop,
    motion damage against the image before the move: TorchIO keeps the head's first position over
    the k-space centre, so that is the nearest still position).
    Noise is added on this grid (Rician) with the sigma that brings the working-resolution SNR
    to its target, given the scan's own noise (measured in the air of the clean input, so that
    motion ghosts do not count as noise): SNR = WM level / hypot(own sigma, added sigma)."""
    out = data.astype(np.float32, copy=True)
    evidence = {}
    # the scan's own noise, measured before motion ghosts reach the air
    sigma0, reduction = working_sigma(out, affine)
    for params in applied:
        if params["artefact"] == "motion":
            before = out
            out = apply_motion(out, affine, params)
            evidence["motion_damage"] = motion_damage(out, [before])
        elif params["artefact"] == "contrast":
            before = nd_wgm_native(out, wm, gm)
            out = gamma_contrast(out, params["log_gamma"])
            evidence["contrast_drop"] = 1.0 - nd_wgm_native(out, wm, gm) / before
    wm_level = float(np.median(out[wm]))
    sigma = sigma0
    for params in (p for p in applied if p["artefact"] == "noise"):
        target = wm_level / params["target_snr"]  # at the working resolution
        add = float(np.sqrt(max(target**2 - sigma0**2, 0.0)))
        rng = np.random.default_rng(params["seed"])
        native_sigma = add / max(reduction, 1e-6)
        out = add_rician(out, native_sigma, rng)
        sigma = float(np.hypot(sigma0, add))
    evidence["snr"] = wm_level / sigma if sigma > 0 else float("inf")
    return out, evidence


def gamma_contrast(data: np.ndarray, log_gamma: float) -> np.ndarray:
    """``data`` with its intensities raised to ``exp(log_gamma)`` on the scale of the 99.9th
    percentile (TorchIO's ``Gamma`` on a [0, 1] image): lowers the WM/GM ratio r to ~r**gamma."""
    top = float(np.percentile(data, 99.9))
    unit = np.clip(data, 0, None) / top
    return (unit ** np.exp(log_gamma) * top).astype(np.float32)


def add_rician(data: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``data`` as a magnitude image with Rician noise of ``sigma`` (float32 draws, float32 out)."""
    real = data + rng.normal(0.0, sigma, data.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, data.shape).astype(np.float32)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def measured_grades(applied: list[dict], evidence: dict) -> dict:
    """The grades a reader would give: motion by the damage it left, noise by the SNR reached,
    contrast by the ND-WGM drop (module docstring). ``evidence`` must hold ``motion_damage``
    when ``applied`` holds a motion."""
    motion = 0
    if any(p["artefact"] == "motion" for p in applied):
        if "motion_damage" not in evidence:
            raise ValueError("motion applied but no motion_damage measured: the grade is defined by it")
        motion = 2 if evidence["motion_damage"] >= MOTION_DAMAGE_SEVERE else 1
    noise = grade_from(evidence["snr"], NOISE_SNR_LIMITS, lower_is_worse=True)
    drop = evidence.get("contrast_drop", 0.0)
    contrast = grade_from(drop, CONTRAST_DROP_LIMITS, lower_is_worse=False)
    return {"motion": int(motion), "noise": int(noise), "contrast": int(contrast)}


def to_ras(data, affine) -> tuple[np.ndarray, np.ndarray, tuple]:
    """File voxel order -> the RAS-reoriented array, affine and zooms the preprocessing takes."""
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    return (np.asarray(img.dataobj, dtype=np.float32), img.affine,
            tuple(float(z) for z in img.header.get_zooms()[:3]))
