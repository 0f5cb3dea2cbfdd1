"""The slab verdict read into the motion grade, end to end through the app's scan assessment:
only when the slab model's manifest asks for it, and then as :func:`bids_qc.verdict.slab_fused_motion`
says (motion -> grade >= 1; no motion -> a moderate call of the 3D detectors alone is dropped)."""
from pathlib import Path

import pytest

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.models import load_bundle
from bids_qc.resources import model_dir
from bids_qc.scan import assess_scan
from bids_qc.slab_detector.detector import load_detector, save_detector
from bids_qc.verdict import slab_fused_motion

ROOT = Path(__file__).resolve().parent.parent
SCAN = ROOT / "examples" / "ixi_mini" / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz"


def _slab(tmp_path, threshold: float, fuse: bool):
    shipped = load_detector(model_dir("slab-motion-ixi-v1"))  # one network, re-saved at a threshold
    extra = {"fuse_into_motion_grade": True} if fuse else {}
    name = f"slab-{threshold}-{fuse}"
    return load_detector(save_detector(tmp_path / name, shipped.net, model_id=name,
                                       threshold=threshold, extra=extra))


@pytest.mark.skipif(not SCAN.is_file(), reason=f"{SCAN} missing")
def test_motion_grade_follows_the_slab_verdict_only_when_the_model_asks(tmp_path):
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    alone = assess_scan(SCAN, bundle, want_images=False).record
    detectors_grade = alone["grades"]["motion"]
    for threshold in (1e-6, 1 - 1e-6):  # every scan is "motion", then none is
        said = threshold < 0.5
        plain = assess_scan(SCAN, bundle, want_images=False, slab=_slab(tmp_path, threshold, False)).record
        assert plain["slab_motion"]["motion"] is said and plain["slab_motion"]["fused"] is False
        assert plain["grades"] == alone["grades"]
        fused = assess_scan(SCAN, bundle, want_images=False, slab=_slab(tmp_path, threshold, True)).record
        assert fused["slab_motion"]["motion"] is said and fused["slab_motion"]["fused"] is True
        assert fused["grades"]["motion"] == slab_fused_motion(detectors_grade, said)
        assert fused["grades"]["motion"] >= 1 if said else fused["grades"]["motion"] in (0, 2)
        assert {a: g for a, g in fused["grades"].items() if a != "motion"} == \
            {a: g for a, g in alone["grades"].items() if a != "motion"}
