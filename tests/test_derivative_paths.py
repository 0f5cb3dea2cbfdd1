"""One way to name and one way to write derivative outputs (:mod:`bids_qc.outputs`): the
path builder gives every name the app writes, and no other module moves temporaries into place
itself (training caches excepted: they are not derivatives)."""
from __future__ import annotations

import re
from pathlib import Path

from bids_qc.cli.simulate import simulated_path
from bids_qc.model_inputs import model_input_path
from bids_qc.outputs import derivative_path, scan_folder, scan_output_paths

PACKAGE = Path(__file__).resolve().parent.parent / "bids_qc"


def test_the_path_builder_gives_every_derivative_name():
    d = Path("/o/sub-01/ses-1/anat")
    name = "sub-01_ses-1_acq-fast_T1w"
    assert derivative_path(d, name, ".json", suffix="qc") == d / f"{name}_qc.json"
    assert scan_output_paths(Path("/o"), Path("sub-01/ses-1/anat"), name) == {
        "json": d / f"{name}_qc.json", "html": d / f"{name}_qc.html"}
    assert model_input_path(d, name) == d / (
        "sub-01_ses-1_acq-fast_space-MNI152NLin2009aSym_res-qc_desc-preproc_T1w.nii.gz")
    assert simulated_path(Path("/o"), Path("sub-01/ses-1/anat"), name, "noisesevere") == d / (
        "sub-01_ses-1_acq-fast_space-MNI152NLin2009aSym_desc-noisesevere_T1w.nii.gz")


def test_scan_folder():
    assert scan_folder({"subject": "01"}) == Path("sub-01/anat")
    assert scan_folder({"subject": "01", "session": "1"}) == Path("sub-01/ses-1/anat")
    assert scan_folder({"subject": "01", "session": ""}) == Path("sub-01/anat")


def test_only_outputs_moves_files_into_place():
    """``os.replace``/``Path.replace``/``rename`` of a temporary: only in bids_qc/outputs.py
    (and the training caches)."""
    pattern = re.compile(r"os\.replace\(|\btmp\w*\.(replace|rename)\(")
    offenders = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
                 if pattern.search(p.read_text(encoding="utf-8"))]
    allowed = {"outputs.py"}
    assert [p for p in offenders if p not in allowed and not p.startswith("training/")] == []
