"""Ratings files: both accepted formats, and errors that name the row."""
import pandas as pd
import pytest

from bids_qc.annotations import read_annotations
from bids_qc.exceptions import AnnotationError
from bids_qc.review_priority import scan_review


@pytest.fixture
def table():
    return pd.DataFrame({
        "bids_name": ["sub-01_T1w", "sub-02_ses-1_T1w", "sub-02_ses-2_T1w", "sub-03_run-1_T1w"],
        "subject": ["01", "02", "02", "03"], "session": [None, "1", "2", None],
        "run": [None, None, None, "1"], "status": ["ok"] * 4})


def write(tmp_path, text):
    path = tmp_path / "ratings.tsv"
    path.write_text(text)
    return path


def test_widget_format(tmp_path, table):
    path = write(tmp_path, "bids_name\tparticipant_id\tsession\trun\tmotion\tnoise\tcontrast\ttier_override\tcomment\n"
                           "sub-01_T1w\tsub-01\tn/a\tn/a\t0\t1\t2\tn/a\tok\n"
                           "sub-02_ses-2_T1w\tsub-02\t2\tn/a\tn/a\t0\t0\t3\tghosting\n")
    out = read_annotations(path, table)
    assert list(out["bids_name"]) == ["sub-01_T1w", "sub-02_ses-2_T1w"]
    assert out.loc[0, "contrast"] == 2 and pd.isna(out.loc[1, "motion"])
    assert out.loc[1, "tier_override"] == 3 and out.loc[1, "comment"] == "ghosting"


def test_plain_format_by_participant_and_filename(tmp_path, table):
    path = write(tmp_path, "participant_id\tsession\tmotion\tnoise\tcontrast\n"
                           "sub-01\tn/a\t1\t0\t0\n02\tses-1\t0\t0\t1\n")
    out = read_annotations(path, table)
    assert list(out["bids_name"]) == ["sub-01_T1w", "sub-02_ses-1_T1w"]
    path = write(tmp_path, "filename\tmotion\tnoise\tcontrast\nsub-03/anat/sub-03_run-1_T1w.nii.gz\t2\t0\t0\n")
    assert read_annotations(path, table)["bids_name"].tolist() == ["sub-03_run-1_T1w"]


@pytest.mark.parametrize("body,match", [
    ("bids_name\tmotion\tnoise\tcontrast\nsub-01_T1w\t0\t0\t0\nsub-09_T1w\t0\t0\t0\n", r"row 2: unknown scan"),
    ("bids_name\tmotion\tnoise\tcontrast\nsub-01_T1w\t3\t0\t0\n", r"row 1: column 'motion' must be 0, 1, 2"),
    ("bids_name\tmotion\tnoise\tcontrast\nsub-01_T1w\t0\t0\t0\nsub-01_T1w\t1\t0\t0\n", r"row 2: duplicate"),
    ("participant_id\tmotion\tnoise\tcontrast\nsub-02\t0\t0\t0\n", r"row 1: .*2 scans"),
    ("bids_name\tmotion\tnoise\nsub-01_T1w\t0\t0\n", r"missing grade column"),
])
def test_errors_name_the_row(tmp_path, table, body, match):
    with pytest.raises(AnnotationError, match=match):
        read_annotations(write(tmp_path, body), table)


def test_review_flags():
    half = {"a": 0.5, "b": 0.5}
    far = {"a": 0.02, "b": 0.97}
    far_u, far_flag = scan_review(far, half)
    assert far_u < 0.4 and not far_flag
    near_u, near = scan_review({"a": 0.45, "b": 0.99}, half)
    assert near and near_u > far_u
    # near means near the detector's own threshold, not 0.5
    assert not scan_review({"a": 0.5}, {"a": 0.9})[1]
    assert scan_review({"a": 0.85}, {"a": 0.9})[1]
    assert scan_review({}, half) == (0.0, False)
