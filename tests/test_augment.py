"""Bright-tail and clip-level augmentations: each keeps a sample's artefacts and labels and the
tissue's intensity ratios, and changes what the normalisation makes of the tissue's brightness."""
import numpy as np
import pytest
import torch

from bids_qc.preprocessing import CLIPPED_MINMAX, REFERENCE_VALUE, ModelGrid, clipped_minmax, minmax
from bids_qc.training.augment import draw_log_uniform, stretch_bright_tail
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
    f = np.array([draw_log_uniform(rng, 0.5, 2.0) for _ in range(4000)])
    assert f.min() >= 0.5 and f.max() <= 2.0
    assert np.mean(f < 1) == pytest.approx(0.5, abs=0.03)  # a stretch and its inverse equally likely


CLIPPED_GRID = ModelGrid(GRID.shape, GRID.spacing, GRID.origin, CLIPPED_MINMAX)


@pytest.mark.parametrize("grid, option, factors", [(GRID, "tail_range", (0.5, 2.0)),
                                                   (CLIPPED_GRID, "clip_range", (0.9, 1.1))])
def test_augmented_samples_keep_their_artefacts_and_labels(grid, option, factors):
    entries = [head_with_vessels(s) for s in range(3)]
    plain = SimulatedSet(entries, n_per_subject=8, seed=5, grid=grid)
    same = SimulatedSet(entries, n_per_subject=8, seed=5, grid=grid, **{option: (1.0, 1.0)})
    augmented = SimulatedSet(entries, n_per_subject=8, seed=5, grid=grid, **{option: factors})
    changed = 0
    for i in range(len(plain)):
        (x, g), (x1, g1), (xa, ga) = plain[i], same[i], augmented[i]
        assert torch.equal(g, g1) and torch.equal(g, ga)
        assert torch.allclose(x, x1, atol=1e-6)  # factor 1 is the plain sample
        changed += not torch.allclose(x, xa, atol=1e-3)
        assert torch.equal(xa, augmented[i][0])  # reproducible
    assert changed >= len(plain) - 2


def test_the_clip_factor_rescales_the_tissue_and_keeps_its_ratios():
    v = np.concatenate([np.zeros(500), np.full(300, 100.0), np.full(180, 200.0), np.full(17, 450.0),
                        np.full(3, 900.0)]).astype(np.float32)  # 99.5th percentile: clip level 450
    plain = clipped_minmax(v)
    assert plain[600] == pytest.approx(100 / 450) and plain.max() == 1.0
    brighter, darker = clipped_minmax(v, clip_factor=0.9), clipped_minmax(v, clip_factor=1.1)
    assert brighter[600] == pytest.approx(100 / 405) and darker[600] == pytest.approx(100 / 495)
    assert brighter[900] / brighter[600] == pytest.approx(2.0) == darker[900] / darker[600]
    assert darker.max() == 1.0 and darker[-1] == 1.0  # the vessels, still clipped
    assert ModelGrid(normalisation=CLIPPED_MINMAX).normalise(v, 0.9).tolist() == brighter.tolist()
    with pytest.raises(ValueError, match="clipped min-max"):
        ModelGrid().normalise(v, 0.9)  # plain min-max has no clip level to move

