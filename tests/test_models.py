"""Model folders: round trip, checksum and shape checks that name the folder."""
import json

import pytest
import torch

from bids_qc.exceptions import ModelError
from bids_qc.grading import grades_from_probabilities, tier_from_grades
from bids_qc.models import load_bundle, make_untrained_bundle, sha256
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import DETECTORS

TINY = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


def test_round_trip_and_manifest(tmp_path):
    folder = make_untrained_bundle(tmp_path / "m", grid=TINY, seed=1)
    bundle = load_bundle(folder)
    assert bundle.trained is False and bundle.grid == TINY
    assert set(bundle.members[0]) == set(DETECTORS)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["weights.safetensors"] == sha256(folder / "weights.safetensors")
    mean, std = bundle.predict(torch.rand(2, 1, *TINY.shape))
    assert all(m.shape == (2,) and ((m >= 0) & (m <= 1)).all() for m in mean.values())


def test_corrupted_weights_are_refused_by_name(tmp_path):
    folder = make_untrained_bundle(tmp_path / "broken-model", grid=TINY)
    with open(folder / "weights.safetensors", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match="broken-model.*checksum mismatch"):
        load_bundle(folder)


def test_wrong_geometry_is_refused(tmp_path):
    folder = make_untrained_bundle(tmp_path / "m", grid=TINY)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["input"]["shape"] = [64, 64, 64]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="shape"):
        load_bundle(folder)


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(ModelError, match="no manifest.json"):
        load_bundle(tmp_path / "nothing")


def test_one_folder_layout_for_both_architectures(tmp_path):
    """The six-detector bundle and the slab detector share the folder format of bids_qc.models:
    the same manifest head, and each loader refuses the other's folder by its architecture."""
    from bids_qc.slab_detector.detector import load_detector, save_detector
    from bids_qc.slab_detector.network import SlabNet

    bundle = make_untrained_bundle(tmp_path / "bundle", grid=TINY)
    slab = save_detector(tmp_path / "slab", SlabNet(), model_id="s", threshold=0.5, extra={})
    heads = [json.loads((f / "manifest.json").read_text()) for f in (bundle, slab)]
    for key in ("format_version", "model_id", "architecture", "trained", "created", "input", "files"):
        assert all(key in h for h in heads), key
    with pytest.raises(ModelError, match="architecture 'SlabNet', expected 'Conv5FC3'"):
        load_bundle(slab)
    with pytest.raises(ModelError, match="architecture 'Conv5FC3', expected 'SlabNet'"):
        load_detector(bundle)


@pytest.mark.parametrize("probs,grades,tier", [
    ({d: 0.1 for d in DETECTORS}, {"motion": 0, "noise": 0, "contrast": 0}, 1),
    ({**{d: 0.1 for d in DETECTORS}, "noise_moderate": 0.7}, {"motion": 0, "noise": 1, "contrast": 0}, 2),
    ({**{d: 0.1 for d in DETECTORS}, "motion_severe": 0.9}, {"motion": 2, "noise": 0, "contrast": 0}, 3),
    ({**{d: 0.9 for d in DETECTORS}}, {"motion": 2, "noise": 2, "contrast": 2}, 3),
])
def test_grades_and_tier(probs, grades, tier):
    assert grades_from_probabilities(probs) == grades
    assert tier_from_grades(grades) == tier


def test_every_shipped_model_folder_is_named_by_its_model_id():
    """A folder name users type (``--model-dir``) never says another version than the model's."""
    import json

    from bids_qc.resources import data_path

    folders = [p for p in data_path("models").iterdir() if (p / "manifest.json").is_file()]
    assert folders
    for folder in folders:
        assert json.loads((folder / "manifest.json").read_text())["model_id"] == folder.name
