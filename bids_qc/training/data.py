"""Simulated training samples drawn from cached clean volumes.

Each sample draws a grade per artefact independently (P(0), P(1), P(2) = ``GRADE_PROBS``), so an
image may carry several artefacts ("label 0 includes images with other artefacts") and each
detector derives its own binary label from the grade of its artefact (:mod:`bids_qc.grading`).
Sample ``i`` of epoch ``e`` is fully determined by ``(seed, e, i)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from bids_qc.preprocessing import ModelGrid
from bids_qc.record import ARTEFACTS
from bids_qc.simulation import SEVERITY_NAMES, apply, sample_params, simulate
from bids_qc.training.augment import draw_log_uniform, stretch_bright_tail
from bids_qc.training.cache import CacheEntry

GRADE_PROBS = (0.5, 0.25, 0.25)


def parse_grade_probs(text: str | None) -> tuple[float, float, float]:
    """``"p0,p1,p2"`` (a command line's grade probabilities) -> the tuple; ``None``: ``GRADE_PROBS``.
    Raises ValueError unless they are three non-negative numbers that sum to 1."""
    if text is None:
        return GRADE_PROBS
    probs = tuple(float(x) for x in text.split(","))
    if len(probs) != 3 or abs(sum(probs) - 1) > 1e-6 or min(probs) < 0:
        raise ValueError(f"grade probabilities must be three non-negative numbers that sum to 1, got {text!r}")
    return probs


def draw_grades(rng: np.random.Generator, probs=GRADE_PROBS) -> dict:
    return {a: int(rng.choice(3, p=probs)) for a in ARTEFACTS}


def simulated_draws(volume: np.ndarray, affine: np.ndarray, rng: np.random.Generator, n: int,
                    motion_timing: str = "torchio", probs=GRADE_PROBS):
    """``n`` ``(grades, image)`` pairs from one clean volume, every artefact simulated on the fly
    (motion included, unlike :func:`make_sample`'s cached variants): the held-out benchmarks'
    images, identical between them for the same ``rng`` seed."""
    for _ in range(n):
        grades = draw_grades(rng, probs)
        image, _ = simulate(volume, affine, grades, rng, motion_timing)
        yield grades, image


def make_sample(entry: CacheEntry, grades: dict, rng: np.random.Generator,
                grid: ModelGrid, tail_factor: float | None = None,
                clip_factor: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    """Clean cached volume + artefacts of ``grades`` -> model input (``grid.normalise``).

    ``tail_factor`` first stretches the bright tail of the scan (:mod:`bids_qc.training.augment`),
    as if it came from a subject with brighter or dimmer vessels; the artefacts follow.
    ``clip_factor`` moves the clip level of the clipped min-max normalisation, as if the scan's
    99.5th percentile (scalp fat, vessels) lay higher or lower relative to its tissue.
    """
    applied = []
    if grades["motion"]:
        variants = entry.motion[grades["motion"]]
        k = int(rng.integers(len(variants)))
        volume = variants[k].astype(np.float32)
        applied.append({"artefact": "motion", "severity": SEVERITY_NAMES[grades["motion"]],
                        "cached_variant": k})
    else:
        volume = entry.clean.astype(np.float32)
    if tail_factor is not None:
        volume = stretch_bright_tail(volume, tail_factor)
        applied.append({"augmentation": "bright_tail", "factor": round(tail_factor, 4)})
    for artefact in ("contrast", "noise"):
        if grades[artefact]:
            params = sample_params(artefact, SEVERITY_NAMES[grades[artefact]], rng)
            volume = apply(volume, grid.affine, params)
            applied.append(params)
    if clip_factor != 1.0:
        applied.append({"augmentation": "clip_level", "factor": round(clip_factor, 4)})
    return grid.normalise(volume, clip_factor), applied


class SimulatedSet(Dataset):
    """``n_per_subject`` simulated samples per cached scan; ``set_epoch`` re-draws them.

    ``tail_range=(low, high)`` augments every sample with a bright-tail factor drawn from its own
    random stream, so the artefacts drawn for a sample are the same with or without it;
    ``clip_range=(low, high)`` likewise with a clip-level factor (clipped min-max only).
    """

    def __init__(self, entries: list[CacheEntry], n_per_subject: int, seed: int = 0,
                 grid: ModelGrid = ModelGrid(), probs=GRADE_PROBS,
                 tail_range: tuple[float, float] | None = None,
                 clip_range: tuple[float, float] | None = None):
        self.entries = [e if e.clean is not None else e.load() for e in entries]
        self.n_per_subject = n_per_subject
        self.seed = seed
        self.epoch = 0
        self.grid = grid
        self.probs = probs
        self.tail_range = tail_range
        self.clip_range = clip_range

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries) * self.n_per_subject

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _aug_rng(self, index: int, stream: int) -> np.random.Generator:
        """An augmentation's own random stream: drawing it leaves the artefacts' draws alone."""
        return np.random.default_rng([self.seed, self.epoch, index, stream])

    def grades(self, index: int) -> dict:
        return draw_grades(self._rng(index), self.probs)

    def __getitem__(self, index: int):
        rng = self._rng(index)
        grades = draw_grades(rng, self.probs)
        tail = None if self.tail_range is None else draw_log_uniform(self._aug_rng(index, 1), *self.tail_range)
        clip = 1.0 if self.clip_range is None else draw_log_uniform(self._aug_rng(index, 2), *self.clip_range)
        x, _ = make_sample(self.entries[index % len(self.entries)], grades, rng, self.grid, tail, clip)
        return torch.from_numpy(x)[None], torch.tensor([grades[a] for a in ARTEFACTS])


# Offsets from a run's --seed that fix its validation and held-out test images: training,
# calibration and re-scoring must all rebuild the very same images from the same seed.
SEED_OFFSETS = {"val": 1000, "test": 2000}


def images_of(entries: list[CacheEntry], subjects, n_per_subject: int, seed: int, part: str,
              grid: ModelGrid = ModelGrid(),
              clip_range: tuple[float, float] | None = None) -> SimulatedSet:
    """The fixed simulated images of ``subjects`` for ``part`` ('val' or 'test') of a run
    (``clip_range``: each with its own fixed clip-level factor, see :class:`SimulatedSet`)."""
    subjects = set(subjects)
    return SimulatedSet([e for e in entries if e.subject in subjects], n_per_subject,
                        seed=seed + SEED_OFFSETS[part], grid=grid, clip_range=clip_range)
