"""The group table (``group_T1w.tsv``) against its JSON Schema
(``bids_qc/data/schemas/group_table.schema.json``): every column the group level writes, the
fine-tuning and site-threshold columns too, is listed, typed and described."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pandas as pd
import pytest

from bids_qc.group_table import record_to_row, records_to_table
from bids_qc.models import load_bundle, make_untrained_bundle
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import DETECTORS, new_record, set_error
from bids_qc.resources import load_schema
from bids_qc.training.finetune_group import rescore

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))


@pytest.fixture(scope="module")
def schema():
    schema = load_schema("group_table")
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _records() -> list[dict]:
    good = new_record("sub-01/anat/sub-01_T1w.nii.gz")
    good.update(bids_name="sub-01_T1w", entities={"subject": "01"}, tier=2,
                grades={"motion": 1, "noise": 0, "contrast": 0}, uncertainty=0.1,
                needs_review=True, probabilities={d: 0.3 for d in DETECTORS},
                model={"id": "m", "trained": True, "dir": "/m"},
                bids_meta={"Manufacturer": "GE", "ManufacturersModelName": None,
                           "MagneticFieldStrength": 1.5, "site": "A"},
                slab_motion={"model_id": "s", "score": 0.2, "threshold": 0.1, "motion": True,
                             "n_triplets": 9, "note": None}, qc_json="sub-01/anat/sub-01_T1w_qc.json")
    good["metrics"]["snr"] = 12.5
    other = new_record("sub-02/ses-1/anat/sub-02_ses-1_echo-1_T1w.nii.gz")
    other.update(bids_name="sub-02_ses-1_echo-1_T1w",
                 entities={"subject": "02", "session": "1", "echo": "1"},
                 qc_json="sub-02/ses-1/anat/sub-02_ses-1_echo-1_T1w_qc.json")
    failed = set_error(new_record("sub-03/anat/sub-03_T1w.nii.gz"), ValueError("bad\nfile"), "bids")
    failed.update(bids_name="sub-03_T1w", entities={"subject": "03"},
                  qc_json="sub-03/anat/sub-03_T1w_qc.json")
    return [good, other, failed]


def _rows(table: pd.DataFrame) -> list[dict]:
    return json.loads(table.to_json(orient="records"))


def test_the_base_columns_are_the_required_ones_in_order(schema):
    assert list(record_to_row({})) == schema["required"]
    described = [c for c, v in schema["properties"].items() if not v.get("description")]
    assert described == []


def test_rows_of_a_table_and_of_a_fine_tuned_table_validate(schema, tmp_path):
    table = records_to_table(_records())
    validator = jsonschema.Draft202012Validator(schema)
    for row in _rows(table):
        validator.validate(row)
    bundle = load_bundle(make_untrained_bundle(tmp_path / "tiny", grid=TINY_GRID))
    rng = np.random.default_rng(0)
    inputs = {"sub-01_T1w": rng.random(TINY_GRID.shape, dtype=np.float32)}
    columns = rescore(table, inputs, bundle)
    for column in columns:  # as the group workflow adds them
        table[column] = columns[column]
    table["model_id_ft"] = pd.Series("tiny-ft", index=table.index, dtype="string").mask(
        table["tier_ft"].isna())
    table["slab_motion_site"] = pd.array([True, None, None], dtype="boolean")
    unlisted = sorted(set(table.columns) - set(schema["properties"]) - {"echo"})
    assert unlisted == [], f"group columns missing from the schema: {unlisted}"
    for row in _rows(table):
        validator.validate(row)
    assert _rows(table)[0]["tier_ft"] in (1, 2, 3)


def test_a_wrongly_typed_column_fails(schema):
    row = _rows(records_to_table(_records()))[0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**row, "tier": "good"}, schema)
