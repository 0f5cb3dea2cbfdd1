"""scripts/train_scanner_space.py --head-only --detectors: only the named detectors change; several
image folders are pooled."""
import json
import runpy
from pathlib import Path

import numpy as np
import torch

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.models import load_bundle
from bids_qc.record import ARTEFACTS, DETECTORS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_scanner_space.py"


def _images(folder: Path, n: int, shape, seed: int) -> None:
    """``n`` images in the generated-set format, grades cycling so every class occurs."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        grades = [(i + k) % 3 for k in range(len(ARTEFACTS))]
        box = rng.random(shape, dtype=np.float32).astype(np.float16)
        np.savez(folder / f"img-{i:05d}.npz", box=box, grades=np.array(grades), record=json.dumps({}))


def test_only_the_named_detector_is_retrained(tmp_path):
    init = load_bundle(DEFAULT_MODEL_DIR)
    _images(tmp_path / "ss" / "train", 9, init.grid.shape, 0)
    _images(tmp_path / "ss" / "val", 9, init.grid.shape, 1)
    _images(tmp_path / "more" / "train", 4, init.grid.shape, 2)
    _images(tmp_path / "more" / "val", 3, init.grid.shape, 3)
    (tmp_path / "ss" / "split.json").write_text(json.dumps(
        {"other_sites_trained": ["x"], "heldout_sites": ["y"]}))
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "model"
    assert main([str(tmp_path / "ss"), str(tmp_path / "more"), str(out), "--init-from", str(DEFAULT_MODEL_DIR), "--model-id", "t",
                 "--head-only", "--epochs", "2", "--detectors", "motion_severe", "--threads", "1"]) == 0
    new = load_bundle(out)
    changed = {d for d in DETECTORS
               if any(not torch.equal(a, b) for a, b in zip(init.members[0][d].state_dict().values(),
                                                            new.members[0][d].state_dict().values()))}
    assert changed == {"motion_severe"}
    assert {d: new.thresholds[d] for d in DETECTORS if d != "motion_severe"} == \
        {d: init.thresholds[d] for d in DETECTORS if d != "motion_severe"}
    training = json.loads((out / "manifest.json").read_text())["training"]
    assert training["calibration"]["objective"] == "youden"
    assert training["folds"][0]["detectors_trained"] == ["motion_severe"]
    assert (training["scanner_space"]["n_train_images"], training["scanner_space"]["n_val_images"]) == (13, 12)
