"""Cache of preprocessed training volumes: one ``.npz`` per scan with the clean volume on the
model grid (reference scale, float16) and a few pre-simulated motion variants per severity
(motion is the only slow simulation, ~0.3 s; noise and contrast are drawn on the fly)."""
from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bids_qc.preprocessing import PREPROCESSING_VERSION, ModelGrid, preprocess
from bids_qc.simulation import apply, sample_params

LOGGER = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    subject: str
    path: Path  # the .npz
    source: str
    clean: np.ndarray | None = None  # (D,H,W) float16
    motion: dict | None = None  # {1: (k,D,H,W) float16, 2: ...}

    def load(self) -> CacheEntry:
        with np.load(self.path) as z:
            self.clean = z["clean"]
            self.motion = {1: z["motion1"], 2: z["motion2"]}
        return self


def find_t1w(bids_dir) -> list[tuple[str, Path]]:
    """``(subject, path)`` of every T1w in a BIDS dataset, found as the app finds them
    (:func:`bids_qc.bids_io.find_t1w`: same query, folder labels, nothing written)."""
    from bids_qc import bids_io

    layout = bids_io.build_layout(Path(bids_dir), validate=False)
    return sorted((s.entities["subject"], s.path) for s in bids_io.find_t1w(layout))


def _cache_one(args) -> tuple[str, str, str | None]:
    subject, path, out, grid_dict, n_variants, seed, motion_timing = args
    out = Path(out)
    if out.exists():
        return subject, str(out), None
    try:
        grid = ModelGrid.from_dict(grid_dict)
        pre = preprocess(path, grid=grid, threads=1, with_registered=False)
        if pre.scaled is None:
            return subject, str(out), "no model-grid volume (partial coverage?)"
        rng = np.random.default_rng(seed)
        motion, params = {}, {}
        for grade, severity in ((1, "moderate"), (2, "severe")):
            variants = []
            for _ in range(n_variants):
                p = sample_params("motion", severity, rng, motion_timing)
                variants.append(apply(pre.scaled, grid.affine, p).astype(np.float16))
                params.setdefault(severity, []).append(p)
            motion[grade] = np.stack(variants)
        tmp = out.with_suffix(".tmp.npz")
        np.savez(tmp, clean=pre.scaled.astype(np.float16), motion1=motion[1], motion2=motion[2],
                 params=json.dumps({"source": str(path), "motion": params,
                                    "preprocessing": pre.record}))
        tmp.replace(out)
        return subject, str(out), None
    except Exception as exc:  # one bad training scan must not stop the cache
        return subject, str(out), str(exc)


def build_cache(bids_dir, cache_dir, grid: ModelGrid = ModelGrid(), n_variants: int = 3,
                seed: int = 0, nprocs: int = 2, motion_timing: str = "uniform") -> list[CacheEntry]:
    """Preprocess every T1w of ``bids_dir`` once into ``cache_dir`` (reused when present).

    ``motion_timing``: how the cached motion variants are timed (:mod:`bids_qc.simulation`;
    default ``"uniform"``, as ``bids-qc-train``). The folder is named after everything that shapes
    its files except ``n_variants`` and ``seed``, which must match between the runs that share it
    (training, then calibration: :func:`cache_settings`).
    """
    cache_dir = Path(cache_dir) / (f"prep-v{PREPROCESSING_VERSION}_grid-{grid.shape_text}-{grid.spacing:g}mm"
                                   f"_motion-{motion_timing}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    scans = find_t1w(bids_dir)
    jobs = [(sub, str(p), str(cache_dir / f"{p.name.split('.')[0]}.npz"), grid.to_dict(), n_variants,
             seed + i, motion_timing) for i, (sub, p) in enumerate(scans)]
    entries = []
    ctx = get_context("fork")
    with ctx.Pool(max(1, nprocs)) as pool:
        for subject, out, err in tqdm(pool.imap(_cache_one, jobs), total=len(jobs),
                                      desc="caching preprocessed volumes", unit="scan"):
            if err:
                LOGGER.warning("skipping %s for training: %s", subject, err)
                continue
            entries.append(CacheEntry(subject=subject, path=Path(out), source=out))
    return entries


def cache_settings(manifest: dict) -> tuple[int, str]:
    """``(motion variants, motion timing)`` the training run of a model folder cached with, so
    that calibration rebuilds its very images. Folders from before these were recorded: the
    variants from the recorded command (the CLI's default 3 if absent), uniform timing."""
    training = manifest.get("training", {})
    variants = training.get("motion_variants")
    if variants is None:
        words = shlex.split(manifest.get("command", ""))
        variants = 3
        for i, word in enumerate(words):
            if word == "--motion-variants" and i + 1 < len(words):
                variants = int(words[i + 1])
            elif word.startswith("--motion-variants="):
                variants = int(word.split("=", 1)[1])
    return int(variants), training.get("motion_timing", "uniform")
