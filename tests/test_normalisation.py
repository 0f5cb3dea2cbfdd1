"""The model input's intensity normalisation: a property of the model folder, recorded wherever a
model input is stored, and (clipped variant) blind to the length of the bright tail."""
import json

import nibabel as nib
import numpy as np
import pytest

from bids_qc.exceptions import ModelError
from bids_qc.model_inputs import load_model_input, save_model_input
from bids_qc.models import load_bundle, make_untrained_bundle
from bids_qc.preprocessing import CLIPPED_MINMAX, MINMAX, REFERENCE_VALUE, ModelGrid
from bids_qc.training.augment import stretch_bright_tail

SMALL = ModelGrid(shape=(16, 20, 16), spacing=10.0)
CLIPPED = ModelGrid(shape=(16, 20, 16), spacing=10.0, normalisation=CLIPPED_MINMAX)


def head(seed=0) -> np.ndarray:
    """Background 0, tissue 60-250, and 0.3 % of voxels in a bright tail up to ~500."""
    rng = np.random.default_rng(seed)
    v = np.zeros(SMALL.shape, np.float32)
    v[2:-2, 2:-2, 2:-2] = rng.uniform(60, 250, (12, 16, 12))
    bright = rng.random(SMALL.shape) < 0.003
    v[bright] = rng.uniform(REFERENCE_VALUE + 5, 500, int(bright.sum()))
    return v


def test_clipped_minmax_ignores_the_bright_tail_where_minmax_does_not():
    v = head()
    for grid, invariant in ((CLIPPED, True), (SMALL, False)):
        ref = grid.normalise(v)
        assert ref.dtype == np.float32 and ref.min() == 0.0 and ref.max() == pytest.approx(1.0)
        for factor in (0.5, 2.0):
            same = np.allclose(grid.normalise(stretch_bright_tail(v, factor)), ref, atol=1e-6)
            assert same is invariant, (grid.normalisation, factor)


def test_clipped_minmax_is_torchios_percentile_rescale():
    import torch
    import torchio as tio

    v = head(4)
    rescale = tio.RescaleIntensity(out_min_max=(0, 1), percentiles=(0, 99.5))
    expected = rescale(tio.ScalarImage(tensor=torch.from_numpy(v)[None])).data[0].numpy()
    assert np.allclose(CLIPPED.normalise(v), expected, atol=1e-6)
    almost_empty = np.zeros(SMALL.shape, np.float32)
    almost_empty[0, 0, :3] = 9.0  # its 99.5th percentile is 0: plain min-max, not unscaled
    assert CLIPPED.normalise(almost_empty).max() == 1.0


def test_clipped_minmax_keeps_the_order_of_tissue_intensities():
    v = head(1)
    out = CLIPPED.normalise(v)
    tissue = (v > 0) & (v < 240)
    order = np.argsort(v[tissue])
    assert np.all(np.diff(out[tissue][order]) >= 0)
    assert np.all(CLIPPED.normalise(np.full(SMALL.shape, 7.0, np.float32)) == 0)  # flat: no NaN


def test_grid_round_trip_reads_manifests_without_a_normalisation_as_minmax():
    assert ModelGrid.from_dict(CLIPPED.to_dict()) == CLIPPED
    legacy = {k: v for k, v in SMALL.to_dict().items() if k != "normalisation"}
    assert ModelGrid.from_dict(legacy).normalisation == MINMAX
    with pytest.raises(ValueError, match="unknown input normalisation"):
        ModelGrid(normalisation="z-score")


def test_a_grid_at_another_spacing_covers_the_same_box():
    """``--grid-spacing``: a finer grid samples the same MNI box (voxel edges, not centres, line
    up) and keeps the normalisation; a spacing that does not tile the box is refused by name."""
    grid = ModelGrid(normalisation=CLIPPED_MINMAX)
    fine = grid.at_spacing(2.0)
    assert fine.shape == (80, 100, 80) and fine.normalisation == CLIPPED_MINMAX

    def box(g):
        corner = np.array(g.origin) - g.spacing / 2
        return corner, corner + np.array(g.shape) * g.spacing

    np.testing.assert_allclose(box(fine), box(grid))
    assert grid.at_spacing(grid.spacing) == grid
    for bad in (3.0, 0.0, -2.0):
        with pytest.raises(ValueError, match="cannot tile"):
            grid.at_spacing(bad)


def test_a_model_folder_with_an_unknown_normalisation_is_refused_by_name(tmp_path):
    folder = make_untrained_bundle(tmp_path / "m", grid=SMALL)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["normalisation"] = "z-score"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="unknown input normalisation") as err:
        load_bundle(folder)
    assert str(folder) in str(err.value)


def test_a_stored_model_input_reads_back_within_its_quantisation_step(tmp_path):
    grid = ModelGrid()  # the shipped geometry
    v = np.random.default_rng(3).random(grid.shape, dtype=np.float32)
    back = load_model_input(save_model_input(v, grid, tmp_path / "a_T1w.nii.gz"), grid)
    assert back.dtype == np.float32 and np.abs(back - v).max() <= 0.5 / 32767 + 1e-7


def test_a_stored_model_input_is_reused_only_under_its_own_normalisation(tmp_path):
    """The group level reuses the participant level's stored inputs: one made for a min-max model
    must not be fed to a clipped one (and the other way round)."""
    v = CLIPPED.normalise(head(2))
    path = save_model_input(v, CLIPPED, tmp_path / "a_T1w.nii.gz")
    assert np.allclose(load_model_input(path, CLIPPED), v, atol=1e-4)
    assert load_model_input(path, SMALL) is None
    img = nib.load(path)  # a file written before the normalisation was recorded
    img.header["descrip"] = b""
    nib.save(img, tmp_path / "old_T1w.nii.gz")
    assert load_model_input(tmp_path / "old_T1w.nii.gz", SMALL) is not None
    assert load_model_input(tmp_path / "old_T1w.nii.gz", CLIPPED) is None


def test_the_app_normalises_as_the_model_folder_says(tmp_path):
    """assess_scan feeds each bundle the input its manifest names, and records which."""
    from conftest import synthetic_head

    from bids_qc.scan import assess_scan

    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(synthetic_head(seed=5), path)
    inputs = {}
    for name, grid in (("plain", SMALL), ("clipped", CLIPPED)):
        bundle = load_bundle(make_untrained_bundle(tmp_path / name, grid=grid))
        out = assess_scan(path, bundle, want_images=False)
        assert out.record["status"] == "ok", out.record["error"]
        assert out.record["preprocessing"]["intensity"]["normalisation"] == grid.normalisation
        inputs[grid.normalisation] = out.model_input
    plain, clipped = inputs[MINMAX], inputs[CLIPPED_MINMAX]
    assert plain.max() == clipped.max() == pytest.approx(1.0)
    assert np.mean(clipped > 0.999) > 0.003 > np.mean(plain > 0.999)  # the clipped top 0.5 %
