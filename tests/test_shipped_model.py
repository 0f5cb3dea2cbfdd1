"""The shipped default model folder: loads, checksums match, trained, stable outputs on the demo."""
import json
from pathlib import Path

import pytest

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.models import load_bundle, sha256
from bids_qc.record import DETECTORS

ROOT = Path(__file__).resolve().parent.parent  # scans in the reference are relative to it
REFERENCE = DEFAULT_MODEL_DIR / "reference_outputs.json"


def test_shipped_folder_loads_and_checksums_match():
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    for name, digest in bundle.manifest["files"].items():
        assert sha256(DEFAULT_MODEL_DIR / name) == digest
    assert set(bundle.members[0]) == set(DETECTORS)
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()


def test_shipped_model_is_trained_and_documented():
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert manifest["trained"] is True
    assert manifest["command"].startswith("bids-qc-train")
    test_subjects = set(manifest["training"]["test_subjects"])
    for fold in manifest["training"]["folds"]:
        assert not test_subjects & set(fold["train_subjects"]), "held-out subjects were trained on"
        assert not set(fold["val_subjects"]) & set(fold["train_subjects"])
    assert "heldout_simulated" in manifest["metrics"]


@pytest.mark.skipif(not REFERENCE.is_file(), reason="no reference_outputs.json in the model folder")
def test_outputs_on_the_bundled_example_are_stable():
    from bids_qc.scan import assess_scan

    reference = json.loads(REFERENCE.read_text())
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    for rel, expected in reference["scans"].items():
        record = assess_scan(ROOT / rel, bundle, want_images=False).record
        assert record["status"] == "ok", record["error"]
        for det in DETECTORS:
            assert record["probabilities"][det] == pytest.approx(expected["probabilities"][det], abs=0.05), det
        near = any(abs(p - bundle.thresholds[d]) < 0.05 for d, p in expected["probabilities"].items())
        if not near:  # a tier may only flip where a probability sits at a threshold
            assert record["tier"] == expected["tier"]
