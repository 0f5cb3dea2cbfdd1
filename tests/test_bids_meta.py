"""Scanner and site captured per scan at participant level (pybids index, BIDS inheritance,
participants.tsv) into the record, and read by the group side from the records."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_qc.bids_io import build_layout, find_t1w
from bids_qc.bids_meta import add_bids_meta
from bids_qc.group_table import records_to_table
from bids_qc.record import new_record
from bids_qc.reports.site_scanner import add_site_scanner

SCANS = ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/anat/sub-02_T1w.nii.gz",
         "sub-02/anat/sub-02_acq-fast_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz",
         "sub-04/ses-1/anat/sub-04_ses-1_T1w.nii.gz"]


@pytest.fixture
def dataset(tmp_path):
    """Dataset-level sidecar (Philips Intera 3 T), a subject-level one (sub-02: 1.5 T), two in
    sub-02/anat (all its T1w, acq-fast only), a session-level one (sub-04), a broken one (sub-03)."""
    root = tmp_path / "bids"
    for rel in SCANS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), root / rel)
    (root / "dataset_description.json").write_text('{"Name": "m", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text(
        "participant_id\tsite\nsub-01\tHH\nsub-02\tGuys\nsub-03\tn/a\n")
    (root / "T1w.json").write_text(json.dumps(
        {"Manufacturer": "Philips", "ManufacturersModelName": "Intera", "MagneticFieldStrength": 3}))
    (root / "sub-02" / "sub-02_T1w.json").write_text('{"MagneticFieldStrength": 1.5}')
    (root / "sub-02" / "anat" / "sub-02_T1w.json").write_text('{"ManufacturersModelName": "Achieva"}')
    (root / "sub-02" / "anat" / "sub-02_acq-fast_T1w.json").write_text(
        '{"ManufacturersModelName": "Ingenia"}')
    (root / "sub-03" / "anat" / "sub-03_T1w.json").write_text('{"MagneticFieldStrength": 7,')
    (root / "sub-04" / "ses-1" / "sub-04_ses-1_T1w.json").write_text('{"Manufacturer": "GE"}')
    return root


EXPECTED = {
    "sub-01_T1w": ("Philips", "Intera", 3, "HH"),
    "sub-02_T1w": ("Philips", "Achieva", 1.5, "Guys"),  # subject level overrides the dataset's
    "sub-02_acq-fast_T1w": ("Philips", "Ingenia", 1.5, "Guys"),  # the more specific name wins
    "sub-03_T1w": ("Philips", "Intera", 3, None),  # broken sidecar left out, site n/a
    "sub-04_ses-1_T1w": ("GE", "Intera", 3, None),  # session level; sub-04 not in the tsv
}


@pytest.mark.parametrize("validate", [True, False])
def test_inherited_sidecars_and_sites_per_scan(dataset, validate, caplog):
    caplog.set_level(logging.WARNING)
    layout = build_layout(dataset, validate=validate)
    scans = add_bids_meta(layout, find_t1w(layout))
    found = {s.bids_name: tuple(s.bids_meta[k] for k in ("Manufacturer", "ManufacturersModelName",
                                                         "MagneticFieldStrength", "site"))
             for s in scans}
    assert found == EXPECTED
    assert "sub-03_T1w.json" in caplog.text  # the broken sidecar is named in a warning


def test_the_app_puts_bids_meta_in_each_record(dataset, tmp_path):
    """The CLI's scan selection reads the metadata; the workflow node carries it; the record
    written for the scan holds it (a scan with a problem: no model needed to write its record)."""
    from bids_qc.cli.run import _select_scans
    from bids_qc.interfaces.assess import qc_scan
    from bids_qc.workflows.participant import init_participant_wf

    config = SimpleNamespace(bids_dir=dataset, skip_bids_validation=False, participant_label=(),
                             session_id=(), bids_filters={}, output_dir=tmp_path / "out",
                             model_dir=tmp_path / "no-model", slab_model_dir=None, omp_nthreads=1,
                             reports=False, work_dir=None)
    scans = _select_scans(config)
    assert scans[0].bids_meta == {"Manufacturer": "Philips", "ManufacturersModelName": "Intera",
                                  "MagneticFieldStrength": 3, "site": "HH"}
    workflow = init_participant_wf(config, scans[:1])
    node = workflow.get_node(workflow.list_node_names()[0])
    assert node.inputs.bids_meta == scans[0].bids_meta
    scan = scans[0]
    summary = qc_scan(in_file=str(scan.path), source_file=scan.source_file,
                      bids_name=scan.bids_name, entities=scan.entities,
                      output_dir=str(config.output_dir), subdir=scan.subdir.as_posix(),
                      model_dir=str(config.model_dir), reports=False, problem="test only",
                      bids_meta=scan.bids_meta)
    record = json.loads(Path(summary["out_json"]).read_text())
    assert record["bids_meta"] == scan.bids_meta


def _record(name: str, subject: str, source_file: str, bids_meta=None) -> dict:
    record = new_record(source_file)
    record.update(bids_name=name, source_file=source_file, entities={"subject": subject})
    if bids_meta is not None:
        record["bids_meta"] = bids_meta
    return record


def test_group_side_reads_the_records_and_falls_back_for_old_ones(dataset, tmp_path):
    """New records carry site and scanner into the group table, and the report side uses them
    without reading the dataset; a record written before (no bids_meta) is looked up as before."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "qc", "DatasetType": "derivative", "SourceDatasets": [{"URL": dataset.as_uri()}]}))
    new = _record("sub-01_T1w", "01", "sub-01/anat/sub-01_T1w.nii.gz",
                  {"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma",
                   "MagneticFieldStrength": 3, "site": "recorded"})
    old = _record("sub-02_T1w", "02", "sub-02/anat/sub-02_T1w.nii.gz")
    table = records_to_table([new, old])
    assert table.loc[0, ["site", "manufacturer", "manufacturers_model_name"]].tolist() == [
        "recorded", "Siemens", "Prisma"]
    assert table.loc[0, "magnetic_field_strength"] == 3
    assert pd.isna(table.loc[1, "site"]) and pd.isna(table.loc[1, "manufacturer"])
    df = add_site_scanner(table.copy(), out)
    assert df["site"].tolist() == ["recorded", "Guys"]  # the record's, participants.tsv's
    assert df["scanner"].tolist() == ["Siemens Prisma 3 T", "Philips Achieva 1.5 T"]
    # with new records only, nothing of the input dataset is read (it could be gone)
    gone = tmp_path / "gone"
    (out / "dataset_description.json").write_text(json.dumps(
        {"Name": "qc", "DatasetType": "derivative", "SourceDatasets": [{"URL": gone.as_uri()}]}))
    df = add_site_scanner(records_to_table([new]), out)
    assert df["site"].tolist() == ["recorded"] and df["scanner"].tolist() == ["Siemens Prisma 3 T"]
