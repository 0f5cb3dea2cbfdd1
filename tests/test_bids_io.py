"""Discovery of T1w scans with pybids: layouts, entities, filters, validation, read-only."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import tree_digest, write_dataset_description

from bids_qc.bids_io import (
    INVALID_NAME,
    BidsValidationFailure,
    NoScansFound,
    build_layout,
    find_t1w,
    invalid_name_scans,
    load_bids_filters,
    unindexed_t1w,
)
from bids_qc.exceptions import BidsInputError
from bids_qc.group_table import records_to_table
from bids_qc.outputs import (
    atomic_write_json,
    check_output_dir,
    scan_output_paths,
)
from bids_qc.record import DETECTORS, new_record


def scans_of(root: Path, **kwargs):
    return find_t1w(build_layout(root), **kwargs)


# --------------------------------------------------------------------------- layouts
def test_ds114_sessions(bids_examples):
    scans = scans_of(bids_examples / "ds114")
    assert len(scans) == 20
    assert Counter(s.entities["session"] for s in scans) == {"test": 10, "retest": 10}
    first = scans[0]
    assert first.source_file == "sub-01/ses-retest/anat/sub-01_ses-retest_T1w.nii.gz"
    assert first.bids_name == "sub-01_ses-retest_T1w"
    assert first.entities == {"subject": "01", "session": "retest"}
    assert first.subdir == Path("sub-01/ses-retest/anat")
    assert first.path.is_absolute() and first.path.exists()


def test_ds051_runs(bids_examples):
    scans = scans_of(bids_examples / "ds051")
    assert len(scans) == 27
    assert all(set(s.entities) == {"subject", "run"} for s in scans)
    assert {s.entities["run"] for s in scans} == {"01", "02", "03"}  # as written in the name
    assert sum(s.entities["subject"] == "07" for s in scans) == 3


def test_7t_trt_only_ses1_and_no_t1map(bids_examples):
    scans = scans_of(bids_examples / "7t_trt")
    assert len(scans) == 22
    assert {s.entities["session"] for s in scans} == {"1"}
    assert all(s.source_file.endswith("_T1w.nii.gz") for s in scans)


def test_ds004332_acq_rec_and_uncompressed(bids_examples):
    scans = scans_of(bids_examples / "ds004332")
    assert len(scans) == 32
    assert all(s.source_file.endswith("_T1w.nii") for s in scans)
    assert {s.entities["acquisition"] for s in scans} == {
        "mpragePMCoff", "mpragePMCon", "t1tirmPMCoff", "t1tirmPMCon"}
    assert {s.entities["reconstruction"] for s in scans} == {"wore", "wre"}
    assert list(scans[0].entities)[:4] == ["subject", "task", "acquisition", "reconstruction"]


def test_synthetic_nii_sessions_derivatives_excluded(bids_examples):
    scans = scans_of(bids_examples / "synthetic")
    assert len(scans) == 10
    assert all("derivatives" not in s.source_file for s in scans)
    assert all(s.path.suffix == ".nii" for s in scans)
    assert {s.entities["session"] for s in scans} == {"01", "02"}


@pytest.mark.parametrize("layout, n, entity, values", [
    ("genetics_ukbb", 14, "acquisition", {"MPRAGE"}),
    ("qmri_qsm", 2, "part", {"mag", "phase"}),
    ("mri_chunk", 2, "chunk", {"1", "2"}),
    ("eeg_rest_fmri", 6, "acquisition", {"y224", "y232"}),
])
def test_more_entities(bids_examples, layout, n, entity, values):
    scans = scans_of(bids_examples / layout)
    assert len(scans) == n
    assert {s.entities[entity] for s in scans} == values


# --------------------------------------------------------------------------- filters
def test_participant_and_session_filters(bids_examples):
    layout = build_layout(bids_examples / "ds114")
    assert len(find_t1w(layout, participant_label=("01", "02"))) == 4
    only_test = find_t1w(layout, session_id=("test",))
    assert len(only_test) == 10 and {s.entities["session"] for s in only_test} == {"test"}
    assert len(find_t1w(layout, participant_label=("03",), session_id=("retest",))) == 1
    with pytest.raises(NoScansFound, match="subjects in the dataset: 01, 02"):
        find_t1w(layout, participant_label=("99",))


def test_bids_filter_file(bids_examples, tmp_path):
    layout = build_layout(bids_examples / "ds004332")
    spec = tmp_path / "filter.json"
    spec.write_text(json.dumps({"t1w": {"acquisition": "mpragePMCon", "reconstruction": "wre"}}))
    scans = find_t1w(layout, filters=load_bids_filters(spec))
    expected = list((bids_examples / "ds004332").glob("sub-*/anat/*acq-mpragePMCon_rec-wre_T1w.nii"))
    assert len(scans) == len(expected) > 0
    assert all(s.bids_name.endswith("acq-mpragePMCon_rec-wre_T1w") for s in scans)
    # null means "entity absent": every scan here has rec-, so nothing is left
    with pytest.raises(NoScansFound):
        find_t1w(layout, filters={"reconstruction": None})
    plain = find_t1w(build_layout(bids_examples / "ds001"), filters={"reconstruction": None})
    assert len(plain) == 16


@pytest.mark.parametrize("text, match", [
    ("{not json", "cannot read JSON"),
    ('["t1w"]', "expected"),
    ('{"t1w": 3}', "expected"),
])
def test_bad_filter_files(tmp_path, text, match):
    spec = tmp_path / "f.json"
    spec.write_text(text)
    with pytest.raises(BidsInputError, match=match):
        load_bids_filters(spec)
    with pytest.raises(BidsInputError, match="not found"):
        load_bids_filters(tmp_path / "missing.json")


# --------------------------------------------------------------------------- validation
def make_minimal(root: Path, names, description=True) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    if description:
        write_dataset_description(root)
    return root


def test_validation(tmp_path):
    root = make_minimal(tmp_path / "nodesc", ["sub-01/anat/sub-01_T1w.nii.gz"], False)
    with pytest.raises(BidsValidationFailure, match="dataset_description.json"):
        build_layout(root)
    assert len(find_t1w(build_layout(root, validate=False))) == 1


def test_invalid_names_are_reported(tmp_path):
    root = make_minimal(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                          "sub-01/anat/sub-01_foo-bar_T1w.nii.gz"])
    layout = build_layout(root)
    assert [s.bids_name for s in find_t1w(layout)] == ["sub-01_T1w"]
    assert unindexed_t1w(layout) == ["sub-01/anat/sub-01_foo-bar_T1w.nii.gz"]
    assert len(find_t1w(build_layout(root, validate=False))) == 2


def test_nii_and_niigz_twins_give_one_scan(tmp_path):
    root = make_minimal(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                          "sub-01/anat/sub-01_T1w.nii"])
    scans = find_t1w(build_layout(root))
    assert [s.source_file for s in scans] == ["sub-01/anat/sub-01_T1w.nii.gz"]


def test_indexing_writes_nothing(bids_examples):
    root = bids_examples / "ds114"
    before = tree_digest(root)
    find_t1w(build_layout(root))
    find_t1w(build_layout(root, validate=False))
    assert tree_digest(root) == before


# --------------------------------------------------------------------------- outputs
def test_atomic_json_is_strict_and_leaves_no_temp(tmp_path):
    record = new_record("x.nii.gz")
    record["metrics"]["snr"] = float("nan")
    record["probabilities"]["motion_moderate"] = math.inf
    path = atomic_write_json(tmp_path / "a" / "b_qc.json", record)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert loaded["metrics"]["snr"] is None and loaded["probabilities"]["motion_moderate"] is None
    assert [p.name for p in path.parent.iterdir()] == ["b_qc.json"]


def test_output_dir_rules(tmp_path):
    bids = tmp_path / "ds"
    bids.mkdir()
    check_output_dir(bids, tmp_path / "out")
    check_output_dir(bids, bids / "derivatives" / "bids_qc")
    for bad in (bids, bids / "out", bids / "sub-01" / "qc"):
        with pytest.raises(ValueError, match="input dataset"):
            check_output_dir(bids, bad)


def test_output_paths():
    paths = scan_output_paths(Path("/o"), Path("sub-01/ses-1/anat"), "sub-01_ses-1_T1w")
    assert paths["json"] == Path("/o/sub-01/ses-1/anat/sub-01_ses-1_T1w_qc.json")
    assert paths["html"] == Path("/o/sub-01/ses-1/anat/sub-01_ses-1_T1w_qc.html")


def test_group_table_columns():
    ok = new_record("a")
    ok.update(bids_name="sub-01_echo-1_T1w", source_file="sub-01/anat/sub-01_echo-1_T1w.nii.gz",
              entities={"subject": "01", "echo": "1"}, tier=2,
              grades={"motion": 1, "noise": 0, "contrast": 0}, model={"id": "m", "trained": True})
    ok["probabilities"] = {d: 0.25 for d in DETECTORS}
    table = records_to_table([ok, {"status": "error", "error": {"message": "bad\tfile\n"}}])
    columns = list(table.columns)
    assert columns[:3] == ["bids_name", "source_file", "subject"]
    assert columns.index("echo") == columns.index("chunk") + 1  # extra entities after the core
    for column in ["status", "error", "tier", "grade_motion", "grade_noise", "grade_contrast",
                   "snr", "nd_wgm", "aes", "tenengrad", "snr_native", "model_id"]:
        assert column in columns
    assert [c for c in columns if c.startswith("p_")] == [f"p_{d}" for d in DETECTORS]
    assert table.loc[0, "tier"] == 2 and table.loc[1, "error"] == "bad file"


# --------------------------------------------------------------------------- odd names (issue 28)
ODD = ["sub-IXI 02/anat/sub-IXI 02_T1w.nii.gz", "sub-IXIé01/anat/sub-IXIé01_T1w.nii.gz",
       "sub-IXI03/anat/sub-IXI03_T1w.nii.gz"]


def test_odd_subject_labels_never_share_outputs(tmp_path, caplog):
    """pybids reads both ``sub-IXI 02`` and ``sub-IXIé01`` as subject "IXI": with
    --skip-bids-validation they must still get their own subject and output folder."""
    root = make_minimal(tmp_path / "ds", ODD)
    scans = find_t1w(build_layout(root, validate=False))
    assert [(s.entities["subject"], s.subdir.as_posix()) for s in scans] == [
        ("IXI 02", "sub-IXI 02/anat"), ("IXI03", "sub-IXI03/anat"), ("IXIé01", "sub-IXIé01/anat")]
    assert "pybids read 'IXI'" in caplog.text
    outputs = {scan_output_paths(Path("/o"), s.subdir, s.bids_name)["json"] for s in scans}
    assert len(outputs) == len(scans)
    # a participant label selects by the folder's label, not pybids' shortened one
    assert find_t1w(build_layout(root, validate=False), participant_label=["IXI03"])[0].entities[
        "subject"] == "IXI03"
    with pytest.raises(NoScansFound):
        find_t1w(build_layout(root, validate=False), participant_label=["IXI"])


def test_t1w_without_subject_is_reported(tmp_path, caplog):
    root = make_minimal(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "anat/T1w.nii.gz"])
    missing: list[str] = []
    scans = find_t1w(build_layout(root, validate=False), without_subject=missing)
    assert [s.source_file for s in scans] == ["sub-01/anat/sub-01_T1w.nii.gz"]
    assert missing == ["anat/T1w.nii.gz"]
    assert "anat/T1w.nii.gz: a T1w file without a subject" in caplog.text


def test_bare_t1w_name_in_a_subject_folder_is_reported_as_invalid(tmp_path):
    from bids_qc.bids_io import invalid_name_scans

    root = make_minimal(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/T1w.nii.gz"])
    assert [s.source_file for s in invalid_name_scans(build_layout(root))] == [
        "sub-01/anat/T1w.nii.gz"]


def test_scans_that_would_share_outputs_get_distinct_error_records(tmp_path):
    """A name holding the byte 0xe9 and one holding the text ``\\xe9`` are displayed alike:
    the second is not assessed, and its error record (own name) names both files."""
    import os

    from bids_qc.bids_io import invalid_name_scans, refuse_shared_outputs

    root = make_minimal(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz",
                                          "sub-01/anat/sub-01_acq-caf\\xe9_T1w.nii.gz"])
    raw = os.fsencode(root / "sub-01" / "anat") + b"/sub-01_acq-caf\xe9_T1w.nii.gz"
    with open(raw, "wb") as handle:
        handle.write(b"")
    scans = invalid_name_scans(build_layout(root))
    assert len({(s.subdir, s.bids_name) for s in scans}) == 1 and len(scans) == 2
    kept, refused = refuse_shared_outputs(scans)
    assert kept.bids_name == "sub-01_acq-caf\\xe9_T1w"
    assert refused.bids_name == "sub-01_acq-caf\\xe9_T1w_dup2"
    assert kept.source_file in refused.problem and "not assessed" in refused.problem
    assert refuse_shared_outputs([kept]) == [kept]


def _tiny_tree(root, description: dict, names) -> None:
    import nibabel as nib
    import numpy as np

    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(description))
    for name in names:
        path = root / "sub-01" / "anat" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)


DERIVED = "sub-01_space-MNI152NLin2009aSym_desc-noisesevere_T1w.nii.gz"


def test_a_derivative_dataset_is_validated_with_the_derivative_rules(tmp_path):
    """space-/desc- names are valid in a derivative dataset that names its pipeline, invalid in
    a raw one; a derivative without GeneratedBy fails validation."""
    derivative = {"Name": "d", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                  "GeneratedBy": [{"Name": "sim"}]}
    _tiny_tree(tmp_path / "deriv", derivative, [DERIVED, "sub-01_T1w.nii.gz"])
    layout = build_layout(tmp_path / "deriv")
    assert sorted(s.bids_name for s in find_t1w(layout)) == ["sub-01_T1w", DERIVED[:-7]]
    assert invalid_name_scans(layout) == []

    _tiny_tree(tmp_path / "raw", {"Name": "r", "BIDSVersion": "1.9.0"}, [DERIVED])
    assert [s.problem for s in invalid_name_scans(build_layout(tmp_path / "raw"))] == [INVALID_NAME]

    _tiny_tree(tmp_path / "anonymous", {**derivative, "GeneratedBy": []}, [DERIVED])
    with pytest.raises(BidsValidationFailure, match="GeneratedBy"):
        build_layout(tmp_path / "anonymous")
