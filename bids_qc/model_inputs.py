"""The networks' input volume of each scan, kept as a derivative so that the group level can
fine-tune and re-score without preprocessing every scan again.

``<bids_name without _T1w>_space-MNI152NLin2009aSym_res-qc_desc-preproc_T1w.nii.gz`` beside the
scan's ``_qc.json``: the model grid (MNI box, 2.5 mm), normalised to [0, 1] as the model folder
says (its name is in the header's ``descrip``; files without one are plain min-max), int16 with a
scale factor (quantisation step 3e-5, far below any simulated artefact).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qc.outputs import atomic_path, derivative_path
from bids_qc.preprocessing import MINMAX, TEMPLATE_NAME, ModelGrid

ENTITIES = (("space", TEMPLATE_NAME), ("res", "qc"), ("desc", "preproc"))
QUANT = 32767


def model_input_path(folder, bids_name: str) -> Path:
    """Where the model input of the scan ``bids_name`` goes in ``folder`` (its ``_qc.json``'s)."""
    return derivative_path(folder, bids_name, ".nii.gz", entities=ENTITIES)


def save_model_input(volume: np.ndarray, grid: ModelGrid, path) -> Path:
    """Write atomically (:func:`bids_qc.outputs.atomic_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # integers and slope given explicitly: a float array with a slope set by hand is saved by
    # nibabel as the float values rounded to integers (every input became 0 or 1 / 32767)
    raw = np.round(np.clip(np.asarray(volume, np.float32), 0.0, 1.0) * QUANT).astype(np.int16)
    img = nib.Nifti1Image(raw, grid.affine)
    img.header.set_slope_inter(1.0 / QUANT, 0.0)
    img.header.set_qform(grid.affine, 1)
    img.header.set_sform(grid.affine, 1)
    img.header["descrip"] = grid.normalisation.encode()
    with atomic_path(path) as tmp:  # a name unique to this process; removed if the save fails
        nib.save(img, str(tmp))
    return path


def load_model_input(path, grid: ModelGrid) -> np.ndarray | None:
    """The stored volume, or None if missing or of another geometry or normalisation than ``grid``."""
    path = Path(path)
    if not path.is_file():
        return None
    img = nib.load(str(path))
    if tuple(img.shape) != tuple(grid.shape) or not np.allclose(img.affine, grid.affine, atol=1e-3):
        return None
    if (img.header["descrip"].item().decode(errors="replace") or MINMAX) != grid.normalisation:
        return None
    return np.asarray(img.dataobj, dtype=np.float32)
