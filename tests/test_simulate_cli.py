"""``bids-qc-simulate`` on two synthetic heads: simulated images beside a labels.tsv that records
the drawn parameters, motion timed as asked, the input dataset left untouched."""
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_head, write_dataset_description

from bids_qc.cli.simulate import main as simulate_main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    bids = tmp_path_factory.mktemp("simulate") / "bids"
    write_dataset_description(bids)
    description = json.loads((bids / "dataset_description.json").read_text())
    (bids / "dataset_description.json").write_text(json.dumps({**description, "License": "CC-BY-SA-3.0"}))
    for i in range(2):
        path = bids / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(synthetic_head(seed=30 + i), path)
    return bids


@pytest.mark.parametrize("timing", ["torchio", "uniform"])
def test_severe_motion_is_written_with_its_parameters_and_timing(dataset, tmp_path, timing):
    before = sorted(p.name for p in dataset.rglob("*"))
    out = tmp_path / "sim"
    rc = simulate_main([str(dataset), str(out), "--artefact", "motion", "--severity", "severe",
                        "--motion-timing", timing, "--include-clean"])
    assert rc == 0
    labels = pd.read_csv(out / "labels.tsv", sep="\t")
    moved = labels[labels["motion"] == 2]
    assert len(moved) == 2 and len(labels) == 4 and (labels["noise"] == 0).all()
    for _, row in moved.iterrows():
        (params,) = json.loads(row["params"])
        assert params["severity"] == "severe" and np.abs(params["degrees"]).min() >= 5
        times = params["times"]
        in_torchio_windows = all(abs(t - (k + 1) / 5) <= 0.06 + 1e-4 for k, t in enumerate(times))
        assert in_torchio_windows == (timing == "torchio")  # evenly spaced, each within 0.3 step
        image = nib.load(out / row["path"])
        clean = nib.load(out / row["path"].replace("desc-motionsevere", "desc-clean"))
        assert image.shape == clean.shape
        assert not np.allclose(image.get_fdata(), clean.get_fdata())
    assert sorted(p.name for p in dataset.rglob("*")) == before


def test_the_app_accepts_the_output_with_bids_validation_on(dataset, tmp_path):
    """A valid BIDS derivative: the app's own scan selection (validation on) finds every
    simulated image, each a T1w of its subject, and refuses none of their names."""
    from types import SimpleNamespace

    from bids_qc.bids_io import DerivativeFileNames
    from bids_qc.cli.run import _select_scans

    out = tmp_path / "sim"
    assert simulate_main([str(dataset), str(out), "--artefact", "noise", "--severity",
                          "moderate", "--include-clean"]) == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "bids-qc-simulate"
    assert description["SourceDatasets"] == [{"URL": dataset.as_uri()}]
    assert description["License"] == "CC-BY-SA-3.0"  # derived images keep the source's licence
    assert (out / ".bidsignore").read_text().split() == ["labels.tsv"]
    config = SimpleNamespace(bids_dir=out, skip_bids_validation=False, participant_label=(),
                             session_id=(), bids_filters={})
    scans = _select_scans(config)
    labels = pd.read_csv(out / "labels.tsv", sep="\t")
    assert sorted(s.source_file for s in scans) == sorted(labels["path"])
    assert all(not s.problem for s in scans)
    assert {s.entities["subject"] for s in scans} == {"00", "01"}
    assert {s.entities["desc"] for s in scans} == {"noisemoderate", "clean"}
    for path in labels["path"]:  # every image names its source scan
        sidecar = json.loads((out / path.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Sources"][0].startswith("bids:raw:sub-")
        assert DerivativeFileNames().is_bids("/" + path)
