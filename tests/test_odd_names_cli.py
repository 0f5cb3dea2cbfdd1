"""Odd names through the app (issue 28): with --skip-bids-validation, ``sub-IXI 02`` and
``sub-IXIé01`` (both read as subject "IXI" by pybids) get their own outputs; a T1w file without
a subject is reported and makes the exit code 65."""
from __future__ import annotations

import json

import nibabel as nib
import pytest
from conftest import write_dataset_description
from corpus import slab

from bids_qc.cli.run import main
from bids_qc.models import make_untrained_bundle
from bids_qc.preprocessing import ModelGrid

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_untrained_bundle(tmp_path_factory.mktemp("model") / "tiny", grid=TINY_GRID)


def _dataset(root, names):
    write_dataset_description(root)
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(slab(i), str(path))  # a slab: read, not registered (fast)
    return root


def _run(bids, out, model, *extra):
    return main([str(bids), str(out), "participant", "--skip-bids-validation", "--plugin",
                 "Linear", "--no-reports", "--model-dir", str(model), *extra])


def test_odd_labels_get_their_own_outputs(tmp_path, tiny_model):
    bids = _dataset(tmp_path / "ds", ["sub-IXI 02/anat/sub-IXI 02_T1w.nii.gz",
                                      "sub-IXIé01/anat/sub-IXIé01_T1w.nii.gz"])
    out = tmp_path / "out"
    assert _run(bids, out, tiny_model) == 0
    records = sorted(out.rglob("*_qc.json"))
    assert [p.relative_to(out).as_posix() for p in records] == [
        "sub-IXI 02/anat/sub-IXI 02_T1w_qc.json", "sub-IXIé01/anat/sub-IXIé01_T1w_qc.json"]
    subjects = [json.loads(p.read_text(encoding="utf-8"))["entities"]["subject"] for p in records]
    assert subjects == ["IXI 02", "IXIé01"]
    assert main([str(bids), str(out), "group"]) == 0
    table = (out / "group_T1w.tsv").read_text(encoding="utf-8")
    assert "\tIXI 02\t" in table and "\tIXIé01\t" in table


def test_t1w_without_subject_is_reported_with_exit_65(tmp_path, tiny_model, caplog):
    bids = _dataset(tmp_path / "ds", ["sub-01/anat/sub-01_T1w.nii.gz", "anat/T1w.nii.gz"])
    out = tmp_path / "out"
    assert _run(bids, out, tiny_model) == 65
    assert [p.name for p in out.rglob("*_qc.json")] == ["sub-01_T1w_qc.json"]
    assert "1 T1w file(s) without a subject were not assessed (no outputs): anat/T1w.nii.gz" \
        in caplog.text
    assert _run(bids, out, tiny_model) == 65  # resuming does not hide it either
    bids_alone = _dataset(tmp_path / "alone", ["anat/T1w.nii.gz"])
    assert _run(bids_alone, tmp_path / "out2", tiny_model) == 18
    assert "without a subject were not assessed, e.g. anat/T1w.nii.gz" in caplog.text
