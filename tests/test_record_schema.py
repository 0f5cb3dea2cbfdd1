"""The per-scan record (``<bids_name>_qc.json``) against its JSON Schema
(``bids_qc/data/schemas/qc_record.schema.json``): records written by the participant interface
for a good scan (ensemble model: ``probability_std`` too), an error, a scan that cannot be
judged and a slab scored by the slab motion detector all validate, and the schema lists every
key the code writes (the top level allows no other key)."""
from __future__ import annotations

import json

import jsonschema
import nibabel as nib
import numpy as np
import pytest
from corpus import ZOOM, head, slab

from bids_qc.config import DEFAULT_SLAB_MODEL_DIR
from bids_qc.interfaces.assess import qc_scan
from bids_qc.models import save_bundle
from bids_qc.networks import Conv5FC3
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import DETECTORS, new_record
from bids_qc.resources import load_schema
from bids_qc.verdict import verdict

TINY_GRID = ModelGrid(shape=(16, 16, 16), spacing=10.0, origin=(-75.0, -75.0, -75.0))
#: Keys the participant interface adds to every record it writes (bids_qc.interfaces.assess).
BIDS_KEYS = {"bids_name", "entities", "bids_meta"}


@pytest.fixture(scope="module")
def schema():
    schema = load_schema("qc_record")
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="module")
def ensemble_model(tmp_path_factory):
    """Two untrained members: the verdict then records ``probability_std``."""
    import torch

    from bids_qc.grading import LABEL_SCHEMES

    torch.manual_seed(0)
    members = [{d: Conv5FC3(TINY_GRID.shape).eval() for d in DETECTORS} for _ in range(2)]
    detectors = {d: {**LABEL_SCHEMES[d], "threshold": 0.5} for d in DETECTORS}
    return save_bundle(tmp_path_factory.mktemp("model") / "tiny2", members,
                       model_id="tiny-ensemble", trained=False, grid=TINY_GRID,
                       detectors=detectors)


@pytest.fixture(scope="module")
def records(tmp_path_factory, ensemble_model):
    """``{case: record as written}`` for the four kinds of record."""
    root = tmp_path_factory.mktemp("schema")
    inputs = root / "in"
    inputs.mkdir()
    sagittal = nib.Nifti1Image(np.asarray(head(0, shape=(20, 48, 40)).dataobj),
                               np.diag([2.0, ZOOM, ZOOM, 1.0]))
    images = {"good": head(0), "error": head(1), "cannot_judge": slab(0), "slab": sagittal}
    options = {"good": {"reports": True}, "error": {"problem": "not a valid BIDS name"},
               "cannot_judge": {}, "slab": {"slab_model_dir": str(DEFAULT_SLAB_MODEL_DIR)}}
    out = {}
    for case, image in images.items():
        path = inputs / f"sub-{case.replace('_', '')}_T1w.nii.gz"
        nib.save(image, str(path))
        summary = qc_scan(in_file=str(path), source_file=path.name,
                          bids_name=path.name.removesuffix(".nii.gz"),
                          entities={"subject": case.replace("_", "")},
                          output_dir=str(root / "out"), subdir="anat",
                          model_dir=str(ensemble_model),
                          bids_meta={"Manufacturer": "Siemens", "ManufacturersModelName": None,
                                     "MagneticFieldStrength": 3, "site": "A"},
                          **{"reports": False, **options[case]})
        out[case] = json.loads((root / "out" / "anat" / f"{path.name[:-7]}_qc.json").read_text(),
                               parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
        assert summary["io_error"] == ""
    return out


@pytest.mark.parametrize("case", ["good", "error", "cannot_judge", "slab"])
def test_every_kind_of_record_validates(schema, records, case):
    record = records[case]
    jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)
    assert {
        "good": lambda r: r["tier"] is not None and "probability_std" in r
        and "report" in r["timings"] and "wm_snr" in r["preprocessing"],
        "error": lambda r: r["status"] == "error" and r["error"]["stage"] == "bids",
        "cannot_judge": lambda r: r["status"] == "ok" and r["cannot_judge"],
        "slab": lambda r: r["tier"] is None and r["slab_motion"]["score"] is not None,
    }[case](record), case


def test_the_schema_lists_every_key_the_code_writes(schema):
    """A key added to the record must be added to the schema (and described there)."""
    fields = verdict({d: 0.5 for d in DETECTORS}, {d: 0.5 for d in DETECTORS},
                     {d: 0.1 for d in DETECTORS}).record_fields()
    written = set(new_record("x.nii.gz")) | set(fields) | BIDS_KEYS
    listed = set(schema["properties"])
    assert written == listed, (f"written, not in the schema: {sorted(written - listed)}; "
                               f"in the schema, never written: {sorted(listed - written)}")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(new_record("x.nii.gz")) | BIDS_KEYS
    undescribed = [k for k, v in schema["properties"].items() if not v.get("description")]
    assert undescribed == []


def test_a_key_missing_from_the_schema_fails_validation(schema, records):
    record = {**records["error"], "new_field": 1}
    with pytest.raises(jsonschema.ValidationError, match="new_field"):
        jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)
