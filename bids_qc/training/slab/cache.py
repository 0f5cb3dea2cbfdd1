"""Training cache for the slab detector: per subject one ``.npz`` with the clean sagittal stack
and ``n_variants`` mildly moved copies (uint8, 2 mm RAS, only the slices that hold head)."""
from __future__ import annotations

import json
import logging
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from bids_qc.slab_detector.slices import HEAD_FRACTION_OF_PEAK, slice_foreground, to_ras_stack
from bids_qc.training.slab.simulation import apply_motion, sample_motion

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = "1"


def _to_uint8(stack: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(stack * scale), 0, 255).astype(np.uint8)


def cache_subject(args) -> tuple[str, str | None]:
    subject, path, out, n_variants, seed = args
    out = Path(out)
    if out.exists():
        return subject, None
    try:
        img = nib.load(str(path))
        volume = np.asarray(img.get_fdata(dtype=np.float32))
        clean = to_ras_stack(volume, img.affine)
        frac = slice_foreground(clean)
        kept = np.flatnonzero(frac >= HEAD_FRACTION_OF_PEAK * frac.max())
        lo, hi = max(kept[0] - 1, 0), min(kept[-1] + 2, clean.shape[0])
        scale = 200.0 / max(float(np.percentile(clean[clean > 0], 99.5)), 1e-6)
        rng = np.random.default_rng([seed, int(''.join(c for c in subject if c.isdigit()) or 0)])
        moved, params = [], []
        for _ in range(n_variants):
            p = sample_motion(rng)
            moved.append(_to_uint8(to_ras_stack(apply_motion(volume, img.affine, p), img.affine)
                                   [lo:hi], scale))
            params.append(p)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, clean=_to_uint8(clean[lo:hi], scale), motion=np.stack(moved),
                 amplitude=np.array([p["amplitude"] for p in params], np.float32),
                 params=json.dumps(params))
        tmp.rename(out)
        return subject, None
    except Exception as exc:  # one bad scan must not stop the cache
        return subject, f"{path}: {exc}"


def build_cache(scans: list[tuple[str, Path]], cache_dir, n_variants: int, seed: int,
                nprocs: int = 1) -> dict[str, Path]:
    """Cache every ``(subject, path)``; returns ``{subject: npz}`` of those that worked."""
    cache_dir = Path(cache_dir) / f"slab-v{CACHE_VERSION}_variants-{n_variants}_seed-{seed}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(s, p, cache_dir / f"sub-{s}.npz", n_variants, seed) for s, p in scans]
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
