"""What the slab motion score reacts to when there is no motion: blur and noise on clean scans.

A motion detector that also fires on a scan that is only smoother (a lower-resolution or more
filtered acquisition) or noisier than its training site will flag clean scans of other scanners.
This probe takes clean scans, changes one thing that is not motion, and reports the score:

- ``blur_<s>mm``: the 2 mm sagittal stack smoothed by a Gaussian of ``s`` mm (sigma), i.e. an
  acquisition with a wider point-spread function;
- ``snr_<k>``: Rician noise added on the scan's native grid, sigma = (90th percentile of the head's
  intensities) / ``k``, i.e. white-matter SNR near ``k``;
- ``air_zeroed``: everything outside the head (foreground, holes filled, dilated 2 voxels) set to 0,
  as a masked or heavily thresholded export would store it;
- ``air_floor``: the reverse, a smooth non-zero background outside the head (:data:`AIR_FLOOR` of
  the 99th percentile, varying +-30 % in blobs), as a scanner that stores filtered air leaves it
  (the clean United Imaging scan of the shared data: about 3 %; IXI: 0.2-0.3 %);
- ``uint8``: the stack quantised to 8 bits (IXI, the training site, is stored in 8 bits);
- ``slices_<t>mm``: the scan re-sampled to ``t`` mm along its superior-inferior voxel axis, the
  other axes unchanged, i.e. an axial 2D acquisition's thick slices;
- ``median_3``: a 3x3x3 median on the native grid, as a vendor's edge-preserving filter leaves a
  scan (:mod:`bids_qc.training.slab.denoise`).

Each is reported as the detector's score and its mean logit (the score's log-odds), beside the
unchanged scan. Nothing here is used for training or choosing a threshold.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_qc.scanner_space import add_rician, quantise, resample_to, voxel_sizes
from bids_qc.slab_detector.detector import SlabDetector, score_stack
from bids_qc.slab_detector.slices import FOREGROUND_FRACTION, SPACING_MM, to_ras_stack
from bids_qc.training.slab.augment import smooth_field
from bids_qc.training.slab.denoise import apply_denoise

BLUR_MM = (1.0, 2.0)
NOISE_SNR = (40, 25)
THICK_SLICE_MM = 3.0
AIR_FLOOR = 0.03  # of the stack's 99th percentile


def thick_slices(volume: np.ndarray, affine: np.ndarray, mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` on a grid of ``mm`` along the voxel axis closest to superior-inferior (never
    finer than it was), the other axes unchanged; returns the array and its affine."""
    spacing = voxel_sizes(affine).astype(float)
    axis = int(np.abs(np.asarray(affine)[2, :3]).argmax())
    spacing[axis] = max(mm, spacing[axis])
    return resample_to(volume, affine, spacing)


def rician(volume: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """``volume`` with Rician noise whose sigma puts the head's 90th percentile at SNR ``snr``."""
    volume = np.asarray(volume, np.float32)
    ref = np.percentile(volume, 99)
    head = volume[volume > FOREGROUND_FRACTION * ref] if ref > 0 else volume.ravel()
    return add_rician(volume, float(np.percentile(head, 90)) / snr, rng)


def head_mask(stack: np.ndarray) -> np.ndarray:
    """The head of a stack: foreground (:data:`FOREGROUND_FRACTION` of the 99th percentile), closed,
    holes filled slice by slice, dilated by 2 voxels."""
    ref = np.percentile(stack, 99)
    fg = ndimage.binary_closing(stack > FOREGROUND_FRACTION * ref, iterations=2)
    fg = np.stack([ndimage.binary_fill_holes(s) for s in fg])
    return ndimage.binary_dilation(fg, iterations=2)


def air_floor(stack: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """``stack`` with its air (outside :func:`head_mask`) raised to a smooth floor of ``level`` x
    its 99th percentile, varying +-30 % over blobs of a few voxels; the head is unchanged."""
    mask = head_mask(stack)
    ref = float(np.percentile(stack[stack > 0], 99)) if (stack > 0).any() else 0.0
    floor = level * ref * (1 + 0.3 * smooth_field(rng.normal(0, 1, stack.shape).astype(np.float32), 4))
    return np.where(mask, stack, np.maximum(stack, floor)).astype(np.float32)


def _logit(p: float | None) -> float | None:
    if p is None:
        return None
    p = min(max(p, 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)))


def responses(detector: SlabDetector, volume: np.ndarray, affine: np.ndarray,
              seed: int = 0) -> dict:
    """``{condition: {"score", "logit", "motion"}}`` for the clean scan and each change of it."""
    rng = np.random.default_rng(seed)
    stack = to_ras_stack(volume, affine)
    stacks = {"clean": stack}
    for mm in BLUR_MM:
        stacks[f"blur_{mm:g}mm"] = ndimage.gaussian_filter(stack, mm / SPACING_MM)
    for snr in NOISE_SNR:
        stacks[f"snr_{snr}"] = to_ras_stack(rician(volume, snr, rng), affine)
    stacks["air_zeroed"] = stack * head_mask(stack)
    stacks["air_floor"] = air_floor(stack, AIR_FLOOR, rng)
    stacks["uint8"] = quantise(stack, 8)
    stacks[f"slices_{THICK_SLICE_MM:g}mm"] = to_ras_stack(*thick_slices(volume, affine, THICK_SLICE_MM))
    stacks["median_3"] = to_ras_stack(apply_denoise(volume, {"filter": "median", "weight": 1.0}), affine)
    out = {}
    for name, s in stacks.items():
        score = score_stack(detector.net, s)
        out[name] = {"score": score, "logit": _logit(score),
                     "motion": None if score is None else bool(score >= detector.threshold)}
    return out


def format_table(model_id: str, rows: list[dict]) -> str:
    """Markdown: one line per scan (``{"scan", "site", "responses"}``), the mean logit per
    condition, and how many scans each condition turns into 'motion'."""
    if not rows:
        return ""
    conditions = list(rows[0]["responses"])
    lines = [f"What the score of {model_id} reacts to without motion: mean logit (score's log-odds) "
             "of each clean scan, unchanged and changed by one thing that is not motion; "
             "* = verdict 'motion'", "",
             "| scan | site | " + " | ".join(conditions) + " |",
             "|---|---|" + "---|" * len(conditions)]
    for row in rows:
        cells = []
        for c in conditions:
            r = row["responses"][c]
            cells.append("n/a" if r["logit"] is None else f"{r['logit']:.2f}{'*' if r['motion'] else ''}")
        lines.append(f"| {row['scan']} | {row['site']} | " + " | ".join(cells) + " |")
    flagged = [sum(bool(row["responses"][c]["motion"]) for row in rows) for c in conditions]
    lines.append("| flagged | | " + " | ".join(f"{f} of {len(rows)}" for f in flagged) + " |")
    return "\n".join(lines)
