"""Training cache for the slab detector: per scan one ``.npz`` of ``n_variants`` still/moved
pairs of sagittal stacks (uint8, 2 mm RAS, only the slices that hold head).

Each pair shares one acquisition: with probability ``p_site`` a site-like variation of the scan
(:func:`bids_qc.scanner_space.sample_site`: acquisition grid 1.3-2 mm or thick slices, field of
view, bias field, intensity scale, bit depth), else the scan as stored; then, with probability
``p_psf``, a wider point-spread function (:mod:`.psf`: the same head acquired less sharply).
The motion is made on that acquisition grid; with probability ``p_denoise`` both copies are then
filtered alike (:mod:`.denoise`: a vendor's edge-preserving filter runs on the reconstructed image,
ghosts included); then both copies go through the same stacking as inference
(:func:`bids_qc.slab_detector.slices.to_ras_stack`). Pairs teach the network the difference that
motion makes *within* one scanner, so what differs between scanners (blur of thick slices,
quantisation, shading) is seen on both sides of the label; the first cache (v1) had one still copy
per subject, as stored, and its threshold flagged 5 of 7 clean scans of other scanners.
"""
from __future__ import annotations

import json
import logging
import zlib
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from bids_qc.slab_detector.slices import HEAD_FRACTION_OF_PEAK, slice_foreground, to_ras_stack
from bids_qc.training.slab.denoise import apply_denoise, sample_denoise
from bids_qc.training.slab.psf import apply_psf, sample_psf
from bids_qc.training.slab.simulation import apply_motion, sample_motion

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = "3"
P_SITE = 0.75  # share of pairs made on a site-like variation of the scan
P_PSF = 0.0  # share of pairs made with a wider point-spread function
P_DENOISE = 0.0  # share of pairs whose twins are both denoised after the motion


def _to_uint8(stack: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(stack * scale), 0, 255).astype(np.uint8)


def make_pair(volume: np.ndarray, affine: np.ndarray, rng: np.random.Generator,
              p_site: float = P_SITE, p_psf: float = P_PSF,
              p_denoise: float = P_DENOISE) -> tuple[np.ndarray, np.ndarray, dict]:
    """One still/moved pair of uint8 RAS stacks (cropped to the head's slices) and its record."""
    from nibabel.affines import voxel_sizes

    from bids_qc.scanner_space import apply_site, quantise, sample_site

    site = sample_site(rng, voxel_sizes(affine)) if rng.random() < p_site else None
    data, grid = apply_site(volume, affine, site) if site else (volume, affine)
    # drawn only when asked for, so pairs made without it keep the draws they had
    psf = sample_psf(rng) if p_psf > 0 and rng.random() < p_psf else None
    if psf:
        data = apply_psf(data, psf)
    motion = sample_motion(rng)
    moved = apply_motion(data, grid, motion)
    denoise = sample_denoise(rng) if p_denoise > 0 and rng.random() < p_denoise else None
    if denoise:
        data, moved = apply_denoise(data, denoise), apply_denoise(moved, denoise)
    if site:
        data, moved = quantise(data, site["bits"]), quantise(moved, site["bits"])
    still_stack, moved_stack = to_ras_stack(data, grid), to_ras_stack(moved, grid)
    frac = slice_foreground(still_stack)
    kept = np.flatnonzero(frac >= HEAD_FRACTION_OF_PEAK * frac.max())
    lo, hi = max(kept[0] - 1, 0), min(kept[-1] + 2, still_stack.shape[0])
    scale = 200.0 / max(float(np.percentile(still_stack[still_stack > 0], 99.5)), 1e-6)
    return (_to_uint8(still_stack[lo:hi], scale), _to_uint8(moved_stack[lo:hi], scale),
            {"site": site, "psf": psf, "motion": motion, "denoise": denoise})


def cache_subject(args) -> tuple[str, str | None]:
    subject, path, out, n_variants, seed, p_site, p_psf, p_denoise = args
    out = Path(out)
    if out.exists():
        return subject, None
    try:
        img = nib.load(str(path))
        volume = np.asarray(img.get_fdata(dtype=np.float32))
        rng = np.random.default_rng([seed, zlib.crc32(subject.encode())])
        arrays, records = {}, []
        for k in range(n_variants):
            # the first pair is always the scan as stored: the training site's own look stays in
            arrays[f"still_{k}"], arrays[f"moved_{k}"], record = make_pair(
                volume, img.affine, rng, p_site=0.0 if k == 0 else p_site,
                p_psf=0.0 if k == 0 else p_psf, p_denoise=0.0 if k == 0 else p_denoise)
            records.append(record)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays, amplitude=np.array([r["motion"]["amplitude"] for r in records], np.float32),
                 params=json.dumps(records))
        tmp.rename(out)
        return subject, None
    except Exception as exc:  # one bad scan must not stop the cache
        return subject, f"{path}: {exc}"


def build_cache(scans: list[tuple[str, Path]], cache_dir, n_variants: int, seed: int,
                nprocs: int = 1, p_site: float = P_SITE, p_psf: float = P_PSF,
                p_denoise: float = P_DENOISE) -> dict[str, Path]:
    """Cache every ``(subject, path)``; returns ``{subject: npz}`` of those that worked."""
    # without denoising the folder keeps the name it had before the option existed
    cache_dir = Path(cache_dir) / (f"slab-v{CACHE_VERSION}_variants-{n_variants}_seed-{seed}"
                                   f"_site-{p_site:g}_psf-{p_psf:g}"
                                   + (f"_denoise-{p_denoise:g}" if p_denoise > 0 else ""))
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(s, p, cache_dir / f"sub-{s}.npz", n_variants, seed, p_site, p_psf, p_denoise)
            for s, p in scans]
    done = {}
    ctx = get_context("spawn")
    with ctx.Pool(max(1, nprocs)) as pool:
        for subject, err in tqdm(pool.imap_unordered(cache_subject, jobs), total=len(jobs),
                                 desc="slab cache", unit="scan"):
            if err:
                LOGGER.warning("skipped %s", err)
            else:
                done[subject] = cache_dir / f"sub-{subject}.npz"
    return done
