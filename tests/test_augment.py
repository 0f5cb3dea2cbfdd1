"""Bright-tail augmentation: moves only intensities above the reference level, keeps each
sample's artefacts and labels, and changes what min-max normalisation makes of the tissue."""
import numpy as np
import pytest
import torch

from bids_qc.preprocessing import REFERENCE_VALUE, ModelGrid, minmax
from bids_qc.training.augment import draw_tail_factor, stretch_bright_tail
from bids_qc.training.cache import CacheEntry
from bids_qc.training.data import SimulatedSet

GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


def head_with_vessels(seed):
    """Sphere of 'tissue' (100 and 200) with a few bright voxels far above the reference level."""
    rng = np.random.default_rng(seed)
    r = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij")))
    clean = np.where(r < 0.8, 100.0, 0.0) + np.where(r < 0.4, 100.0, 0.0)
    clean[rng.integers(2, 14, 4), rng.integers(2, 14, 4), rng.integers(2, 14, 4)] = 450.0
    clean = clean.astype(np.float16)
    motion = np.stack([clean] * 2)
    return CacheEntry(subject=f"s{seed}", path=None, source="synthetic", clean=clean,
                      motion={1: motion, 2: motion})


def test_only_the_tail_moves_and_tissue_ratios_survive_normalisation():
    v = np.array([0.0, 100.0, 200.0, REFERENCE_VALUE, 455.0], np.float32)
    assert stretch_bright_tail(v, 2.0).tolist() == [0, 100, 200, 255, 655]
    assert stretch_bright_tail(v, 0.5).tolist() == [0, 100, 200, 255, 355]
    shorter, longer = minmax(stretch_bright_tail(v, 0.5)), minmax(stretch_bright_tail(v, 2.0))
    assert shorter[2] > minmax(v)[2] > longer[2]  # normalised tissue brightness depends on the tail
    assert shorter[1] / shorter[2] == pytest.approx(longer[1] / longer[2])  # its ratios do not
    assert stretch_bright_tail(v, 1.0).tolist() == v.tolist()
    with pytest.raises(ValueError, match="positive"):
        stretch_bright_tail(v, 0.0)


def test_factors_are_log_uniform_within_the_range():
    rng = np.random.default_rng(0)
    f = np.array([draw_tail_factor(rng, 0.5, 2.0) for _ in range(4000)])
    assert f.min() >= 0.5 and f.max() <= 2.0
    assert np.mean(f < 1) == pytest.approx(0.5, abs=0.03)  # a stretch and its inverse equally likely


def test_augmented_samples_keep_their_artefacts_and_labels():
    entries = [head_with_vessels(s) for s in range(3)]
    plain = SimulatedSet(entries, n_per_subject=8, seed=5, grid=GRID)
    same = SimulatedSet(entries, n_per_subject=8, seed=5, grid=GRID, tail_range=(1.0, 1.0))
    augmented = SimulatedSet(entries, n_per_subject=8, seed=5, grid=GRID, tail_range=(0.5, 2.0))
    changed = 0
    for i in range(len(plain)):
        (x, g), (x1, g1), (xa, ga) = plain[i], same[i], augmented[i]
        assert torch.equal(g, g1) and torch.equal(g, ga)
        assert torch.allclose(x, x1, atol=1e-6)  # factor 1 is the plain sample
        changed += not torch.allclose(x, xa, atol=1e-3)
        assert torch.equal(xa, augmented[i][0])  # reproducible
    assert changed >= len(plain) - 2
