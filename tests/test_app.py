"""The BIDS-App end to end, with the real ``assess_scan`` and the shipped model.

One participant run (MultiProc, 2 processes) and one group run on a tiny synthetic dataset
(2 good scans, 1 corrupt) are shared by the tests below; the others check exit codes,
resuming and that the input dataset is never touched.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import DATA, ROOT, make_tiny_bids, tree_digest

from bids_qc import __version__
from bids_qc.cli.run import main
from bids_qc.record import ARTEFACTS, DETECTORS, METRICS

GOOD = {
    "sub-01_ses-01_T1w": ("sub-01/ses-01/anat", {"subject": "01", "session": "01"}),
    "sub-02_run-01_T1w": ("sub-02/anat", {"subject": "02", "run": "01"}),
}
BROKEN = ("sub-03_T1w", "sub-03/anat")


def strict_json(path: Path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{path} holds non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def app_run(tiny_bids, tmp_path_factory):
    """Run participant then group once; return paths, exit codes, logs, input digests."""
    out = tmp_path_factory.mktemp("app") / "out"
    before = tree_digest(tiny_bids)
    logger = logging.getLogger("bids_qc")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    try:
        rc_participant = main([str(tiny_bids), str(out), "participant", "--nprocs", "2"])
        rc_group = main([str(tiny_bids), str(out), "group"])
    finally:
        logger.removeHandler(handler)
    return {"out": out, "rc": (rc_participant, rc_group), "log": records, "before": before,
            "bids": tiny_bids}


def test_exit_codes_of_the_run(app_run):
    assert app_run["rc"] == (65, 0)  # one corrupt scan among good ones, then a clean group run


def test_input_dataset_untouched(app_run):
    assert tree_digest(app_run["bids"]) == app_run["before"]


def test_derivative_files(app_run):
    out = app_run["out"]
    description = strict_json(out / "dataset_description.json")
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0] == {**description["GeneratedBy"][0], "Name": "bids_qc",
                                             "Version": __version__}
    assert description["SourceDatasets"][0]["URL"] == app_run["bids"].resolve().as_uri()
    for name, (subdir, _) in GOOD.items():
        assert (out / subdir / f"{name}_qc.json").is_file()
    assert (out / BROKEN[1] / f"{BROKEN[0]}_qc.json").is_file()
    hidden = [p for p in out.rglob(".*")]
    assert hidden == [], f"temporary files left behind: {hidden}"
    assert not (out / "derivatives").exists() and not list(out.rglob("*T2w*"))


def test_good_records(app_run):
    for name, (subdir, entities) in GOOD.items():
        record = strict_json(app_run["out"] / subdir / f"{name}_qc.json")
        assert record["status"] == "ok", record["error"]
        assert record["bids_name"] == name and record["entities"] == entities
        assert record["source_file"] == f"{subdir}/{name}.nii.gz"
        assert record["tier"] in (1, 2, 3)
        assert set(record["grades"]) == set(ARTEFACTS)
        assert all(record["grades"][a] in (0, 1, 2) for a in ARTEFACTS)
        assert all(0.0 <= record["probabilities"][d] <= 1.0 for d in DETECTORS)
        assert set(record["metrics"]) == set(METRICS)
        assert record["timings"]["total"] > 0
        assert record["model"]["id"] and record["software"]["version"] == __version__
        # scanner and site read at participant level (this dataset has neither: None values)
        assert record["bids_meta"] == dict.fromkeys(
            ("Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "site"))
        slab = record["slab_motion"]
        assert slab["model_id"] == "slab-motion-agree-v1" and 0.0 <= slab["score"] <= 1.0
        assert slab["n_triplets"] > 10
        # this dataset's 4 mm voxels: scored, but no verdict (coarser than MAX_VOXEL_MM)
        assert slab["motion"] is None and slab["note"].startswith("no verdict: 4.0 mm voxels")
        assert slab["fused"] is True  # the shipped slab model asks; without a verdict the 3D grade stands


def test_broken_record(app_run):
    record = strict_json(app_run["out"] / BROKEN[1] / f"{BROKEN[0]}_qc.json")
    assert record["status"] == "error" and record["tier"] is None
    assert record["error"]["message"] and record["error"]["stage"]
    assert record["entities"] == {"subject": "03"}


def test_progress_log(app_run):
    log = app_run["log"]
    lines = [m for m in log if m.startswith("[")]
    assert len(lines) == 3 and {m[:5] for m in lines} == {"[1/3]", "[2/3]", "[3/3]"}
    assert any("sub-03_T1w: ERROR:" in m for m in lines)
    assert sum(" tier " in m and "(motion " in m for m in lines) == 2
    assert any("3 scan(s) to process" in m for m in log)
    assert any(m.startswith("finished: 3 scan(s): 2 ok, 1 failed") for m in log)


def test_group_outputs(app_run):
    out = app_run["out"]
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert len(table) == 3
    assert list(table["bids_name"]) == sorted(list(GOOD) + [BROKEN[0]])
    for column in ["source_file", "subject", "session", "run", "status", "error", "tier",
                   "grade_motion", "grade_noise", "grade_contrast", *[f"p_{d}" for d in DETECTORS],
                   *METRICS, "model_id", "slab_motion_score", "slab_motion", "site", "manufacturer",
                   "manufacturers_model_name", "magnetic_field_strength"]:
        assert column in table.columns
    ok = table[table["status"] == "ok"]
    assert len(ok) == 2 and ok["tier"].isin([1, 2, 3]).all()
    assert table.set_index("bids_name").loc["sub-03_T1w", "status"] == "error"
    summary = strict_json(out / "group_summary.json")
    assert (summary["n_scans"], summary["n_ok"], summary["n_error"]) == (3, 2, 1)
    assert sum(summary["tiers"][t] for t in ("1", "2", "3")) == 2
    assert all(sum(summary["grades"][a][g] for g in "012") == 2 for a in ARTEFACTS)


def test_resume_and_force(app_run, tmp_path):
    """A second run skips scans done OK (only the failed one is retried); --force redoes."""
    out = tmp_path / "out"
    shutil.copytree(app_run["out"], out)
    done = out / "sub-01/ses-01/anat/sub-01_ses-01_T1w_qc.json"
    other = out / "sub-02/anat/sub-02_run-01_T1w_qc.json"
    stamp = done.stat().st_mtime_ns, other.stat().st_mtime_ns
    bids = str(app_run["bids"])
    assert main([bids, str(out), "participant", "--participant-label", "01", "--plugin",
                 "Linear"]) == 0
    assert done.stat().st_mtime_ns == stamp[0]  # skipped, not rewritten
    assert main([bids, str(out), "participant", "--participant-label", "sub-01", "--force",
                 "--plugin", "Linear", "--no-reports"]) == 0
    assert done.stat().st_mtime_ns != stamp[0]
    assert other.stat().st_mtime_ns == stamp[1]
    assert strict_json(done)["status"] == "ok"
    assert tree_digest(app_run["bids"]) == app_run["before"]


# --------------------------------------------------------------------------- exit codes
def test_slab_detector_can_be_turned_off_or_replaced(tiny_bids, tmp_path):
    args = [str(tiny_bids), "", "participant", "--participant-label", "02", "--no-reports"]
    args[1] = str(tmp_path / "off")
    assert main(args + ["--slab-model-dir", "none"]) == 0
    record = strict_json(tmp_path / "off" / "sub-02/anat/sub-02_run-01_T1w_qc.json")
    assert record["slab_motion"] is None and record["tier"] in (1, 2, 3)
    args[1] = str(tmp_path / "missing")
    assert main(args + ["--slab-model-dir", str(tmp_path / "nowhere")]) == 78  # EX_CONFIG


def test_missing_bids_dir_exits_66(tmp_path):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"]) == 66
    assert not (tmp_path / "out").exists()


def test_no_match_exits_18(tiny_bids, tmp_path):
    assert main([str(tiny_bids), str(tmp_path / "o"), "participant",
                 "--participant-label", "99"]) == 18
    assert main([str(tiny_bids), str(tmp_path / "o"), "group"]) == 18  # nothing to gather
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    assert main([str(tiny_bids), str(tmp_path / "empty"), "group"]) == 18


def test_output_inside_input_exits_64(tiny_bids):
    before = tree_digest(tiny_bids)
    assert main([str(tiny_bids), str(tiny_bids / "qc"), "participant"]) == 64
    assert main([str(tiny_bids), str(tiny_bids), "group"]) == 64
    assert main([str(tiny_bids), "/tmp/x", "participant", "-w", str(tiny_bids / "w")]) == 64
    assert tree_digest(tiny_bids) == before


def test_uncreatable_output_exits_73(tiny_bids, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main([str(tiny_bids), str(blocker / "out"), "participant"]) == 73


def test_invalid_dataset_exits_16(tmp_path):
    root = make_tiny_bids(tmp_path / "ds")
    (root / "dataset_description.json").unlink()
    assert main([str(root), str(tmp_path / "out"), "participant"]) == 16
    # without validation the dataset is usable (only the corrupt scan: quick, exit 65)
    assert main([str(root), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--participant-label", "03", "--plugin", "Linear", "--no-reports"]) == 65
    assert strict_json(tmp_path / "out/sub-03/anat/sub-03_T1w_qc.json")["status"] == "error"


def test_filter_file_through_cli(tiny_bids, tmp_path):
    spec = tmp_path / "filter.json"
    spec.write_text('{"t1w": {"acquisition": "MPRAGE"}}')
    assert main([str(tiny_bids), str(tmp_path / "o"), "participant",
                 "--bids-filter-file", str(spec)]) == 18
    spec.write_text('{"t1w": ')
    assert main([str(tiny_bids), str(tmp_path / "o"), "participant",
                 "--bids-filter-file", str(spec)]) == 64


def test_write_failure_exits_74(tiny_bids, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-03").write_text("a file where a folder must go")  # mkdir fails mid-run
    assert main([str(tiny_bids), str(out), "participant", "--participant-label", "03",
                 "--plugin", "Linear", "--no-reports"]) == 74
    assert not list(out.rglob("*_qc.json"))


def test_annotations_usage(tiny_bids, tmp_path):
    ratings = tmp_path / "ratings.tsv"
    assert main([str(tiny_bids), str(tmp_path / "o"), "group", "--annotations",
                 str(ratings)]) == 66
    ratings.write_text("bids_name\trating\n")
    assert main([str(tiny_bids), str(tmp_path / "o"), "participant", "--annotations",
                 str(ratings)]) == 64


def test_bad_model_dir_exits_78(tiny_bids, tmp_path):
    assert main([str(tiny_bids), str(tmp_path / "o"), "participant", "--participant-label",
                 "01", "--model-dir", str(tmp_path)]) == 78


@pytest.mark.slow
def test_example_dataset_end_to_end(tmp_path):
    """The bundled IXI example, as in the README (real anatomy, 3 scans)."""
    example = ROOT / "examples" / "ixi_mini"
    before = tree_digest(example)
    out = tmp_path / "out"
    assert main([str(example), str(out), "participant", "--nprocs", "2"]) == 0
    assert main([str(example), str(out), "group"]) == 0
    table = pd.read_csv(out / "group_T1w.tsv", sep="\t")
    assert len(table) == 3 and (table["status"] == "ok").all()
    assert table["tier"].isin([1, 2, 3]).all()
    assert tree_digest(example) == before


@pytest.mark.slow
def test_shared_ixi_subject_if_present(tmp_path):
    """One real IXI scan through the app (skipped without the shared data)."""
    source = DATA / "ixi"
    if not (source / "sub-IXI015").is_dir():
        pytest.skip(f"shared IXI data not found at {source}")
    bids = tmp_path / "ixi"
    shutil.copytree(source / "sub-IXI015", bids / "sub-IXI015")
    shutil.copy(source / "dataset_description.json", bids)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "--plugin", "Linear", "--no-reports"]) == 0
    record = strict_json(out / "sub-IXI015/anat/sub-IXI015_T1w_qc.json")
    assert record["status"] == "ok" and record["tier"] in (1, 2, 3)
    assert record["metrics"]["snr"] is not None
