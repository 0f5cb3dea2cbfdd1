"""Shared fixtures: tiny synthetic BIDS datasets, the shared data folder, tree hashing."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data"))

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NIPYPE_NO_ET", "1")


def synthetic_head(shape=(48, 56, 48), zoom: float = 4.0, seed: int = 0):
    """A head-like NIfTI: an ellipsoid 'scalp' (300), 'GM' shell (600), brighter 'WM' core
    (1000), Gaussian noise (sd 10); int16, ``zoom`` mm isotropic, RAS affine centred on 0."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    centre = [(n - 1) / 2 for n in shape]
    radius = [n * 0.38 for n in shape]
    dist = sum(((grid[i] - centre[i]) / radius[i]) ** 2 for i in range(3))
    data = 300.0 * (dist < 1) + 300.0 * (dist < 0.8) + 400.0 * (dist < 0.35)
    data = np.clip(data + rng.normal(0, 10, shape), 0, None).astype(np.int16)
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = -np.asarray(shape) * zoom / 2
    return nib.Nifti1Image(data, affine)


def write_dataset_description(root: Path, name: str = "tiny synthetic") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": name, "BIDSVersion": "1.8.0", "DatasetType": "raw"})
    )


def make_tiny_bids(root: Path) -> Path:
    """A BIDS tree with 2 good synthetic T1w scans, 1 corrupt one and files to ignore.

    - sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz      good
    - sub-02/anat/sub-02_run-01_T1w.nii.gz              good
    - sub-03/anat/sub-03_T1w.nii.gz                     truncated gzip (must fail, rest goes on)
    - sub-01/ses-01/anat/sub-01_ses-01_T2w.nii.gz, func/ bold, derivatives/ T1w: not selected
    """
    import nibabel as nib

    write_dataset_description(root)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t40\nsub-03\t50\n")
    good = {
        "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz": 1,
        "sub-02/anat/sub-02_run-01_T1w.nii.gz": 2,
        "sub-01/ses-01/anat/sub-01_ses-01_T2w.nii.gz": 3,
        "derivatives/other/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz": 4,
    }
    for rel, seed in good.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(synthetic_head(seed=seed), path)
    broken = root / "sub-03/anat/sub-03_T1w.nii.gz"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes((root / "sub-02/anat/sub-02_run-01_T1w.nii.gz").read_bytes()[:200])
    func = root / "sub-01/ses-01/func/sub-01_ses-01_task-rest_bold.nii.gz"
    func.parent.mkdir(parents=True, exist_ok=True)
    func.write_bytes(b"")
    (root / "sub-01/ses-01/anat/sub-01_ses-01_T1w.json").write_text('{"RepetitionTime": 2.3}')
    return root


def tree_digest(root: Path) -> str:
    """sha256 over every path (files, folders, symlinks) and file content under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(str(path.stat().st_mode).encode())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def tiny_bids(tmp_path_factory) -> Path:
    """The dataset of :func:`make_tiny_bids` (session scope: tests must not modify it)."""
    return make_tiny_bids(tmp_path_factory.mktemp("tiny") / "ds")


@pytest.fixture(scope="session")
def bids_examples() -> Path:
    """``shared/data/bids-examples`` (skipped when the shared data are absent)."""
    path = DATA / "bids-examples"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set BIDS_QC_DATA)")
    return path
