"""``cannot_judge``: scans read without error that get no verdict say why (bids_qc.judgeable).

The whole app on such files (JSON, TSV, both reports) is tested with the corpus kinds
``int8_negative``, ``tiny_cube``, ``four_slices`` and ``tiny_fov`` in test_bad_input.py.
"""
from __future__ import annotations

import numpy as np

from bids_qc.judgeable import (
    border_voxels,
    negative_background,
    no_verdict_reason,
    set_cannot_judge,
)
from bids_qc.record import new_record


def test_border_voxels_is_the_outer_shell():
    volume = np.zeros((10, 10, 10))
    volume[2:-2, 2:-2, 2:-2] = 1
    assert border_voxels(volume).size == 1000 - 6**3
    assert border_voxels(volume).max() == 0
    assert border_voxels(np.ones((3, 3, 3))).size == 27  # too small for an inside: all border


def test_negative_background_is_refused_with_its_level():
    head = np.full((20, 20, 20), -128.0)
    head[4:-4, 4:-4, 4:-4] = 100.0
    reason = negative_background(head)
    assert reason is not None and "background is negative" in reason and "-128" in reason


def test_a_few_negative_voxels_are_not_a_negative_background():
    rng = np.random.default_rng(0)
    head = np.abs(rng.normal(0, 5, (20, 20, 20)))
    head[4:-4, 4:-4, 4:-4] = 500.0
    head[0, :3, :3] = -40.0  # interpolation ringing in a corner
    assert negative_background(head) is None
    assert negative_background(np.zeros((20, 20, 20))) is None


def _slab_record(score=None, note="not scored: an axial slab (16 mm thick)", motion="auto"):
    record = new_record("x.nii.gz")
    record["preprocessing"] = {"partial_coverage": True, "native_shape": [40, 48, 4],
                               "native_extent_mm": [160.0, 192.0, 16.0]}
    if motion == "auto":
        motion = None if score is None else bool(score >= 0.5)
    record["slab_motion"] = {"score": score, "motion": motion,
                             "note": None if motion is not None else note}
    return record


def test_no_verdict_reason_names_both_detectors():
    reason = no_verdict_reason(_slab_record())
    assert reason.startswith("field of view too small to register (40x48x4 voxels, "
                             "160 x 192 x 16 mm")
    assert "the slab motion detector could not score it (an axial slab (16 mm thick))" in reason


def test_a_slab_motion_score_or_a_tier_is_a_verdict():
    assert no_verdict_reason(_slab_record(score=0.2)) is None
    record = new_record("x.nii.gz")
    record["tier"] = 1
    assert no_verdict_reason(record) is None


def test_a_slab_score_without_a_verdict_does_not_judge():
    reason = no_verdict_reason(_slab_record(score=0.9, motion=None,
                                            note="no verdict: 4.8 mm voxels (thick slices) raise the score"))
    assert reason.endswith("the slab motion detector gave a score but no verdict: 4.8 mm voxels "
                           "(thick slices) raise the score")


def test_errors_and_missing_slab_detector():
    record = new_record("x.nii.gz")
    record["status"] = "error"
    assert set_cannot_judge(record)["cannot_judge"] is None
    record = _slab_record()
    record["slab_motion"] = None
    assert "slab motion detector did not run" in set_cannot_judge(record)["cannot_judge"]
    assert set_cannot_judge(new_record("y"), "because")["cannot_judge"] == "because"


def test_group_report_counts_and_lists_unjudged_scans(tmp_path):
    from bids_qc.group_table import records_to_table, summarise
    from bids_qc.reports.group_report import render_group_report

    judged = new_record("sub-01/anat/sub-01_T1w.nii.gz")
    judged.update(bids_name="sub-01_T1w", entities={"subject": "01"}, tier=1)
    unjudged = set_cannot_judge(_slab_record())
    unjudged.update(bids_name="sub-02_T1w", entities={"subject": "02"},
                    source_file="sub-02/anat/sub-02_T1w.nii.gz")
    table = records_to_table([judged, unjudged])
    assert table["cannot_judge"].isna().tolist() == [True, False]
    assert summarise(table)["n_cannot_judge"] == 1
    html = render_group_report(table, tmp_path / "group_report.html", tmp_path)
    assert 'id="cannot-judge"' in html and "ok · cannot judge" in html
    assert "field of view too small to register" in html
