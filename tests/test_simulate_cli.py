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
