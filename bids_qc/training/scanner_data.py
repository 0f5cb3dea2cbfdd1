"""Training images with artefacts made in the scanner's space (:mod:`bids_qc.scanner_space`).

Two steps, both cached on disk and resumable:

1. :func:`prepare_scans` registers every clean source scan once (the app's own preprocessing)
   and stores it as the file holds it (voxel order, affine; scans finer than 1 mm averaged to
   1 mm first) with its template -> subject matrix.
2. :func:`generate` draws images: a scan (sites balanced by ``site_weights``), a grade per
   artefact (P(0, 1, 2) = ``GRADE_PROBS``; all 0 in ``P_ALL_CLEAN`` more of the images), a site
   variation (except in ``P_AS_ACQUIRED`` of them), the artefacts; the grades are then
   *measured* (:func:`bids_qc.scanner_space.measured_grades`) and the image goes through
   :func:`bids_qc.preprocessing.preprocess_volume` with the clean scan's registration (the only
   step reused: ``tests/test_scanner_space.py`` bounds what that changes). Each image is one
   ``.npz`` (the model box at the reference scale, float16, and its grades and parameters).
   Image ``i`` of a run is fully determined by ``(seed, i)``.

:class:`GeneratedSet` reads them back for :func:`bids_qc.training.loop.train_detectors`.
"""
from __future__ import annotations

import json
import logging
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from bids_qc import scanner_space as ss
from bids_qc.preprocessing import ModelGrid, preprocess, preprocess_volume
from bids_qc.record import ARTEFACTS
from bids_qc.registration import ras_matrix_to_transform
from bids_qc.training.data import GRADE_PROBS, draw_grades

LOGGER = logging.getLogger(__name__)
FINEST_STORED_MM = 1.0
# sites of ../shared/data held out of training whole (scanner_space_images.py, the benchmark):
# the United Imaging scan and both Siemens scanners (3D MPRAGE, 2D thick-slice FLASH)
HELDOUT_SITES = ("uih", "prisma", "decubitus")
# share of images made on the scan as its file holds it (no site variation): real clean scans of
# every site are seen at their own resolution, so blur from a coarser grid is not the only
# "clean" the detectors learn (the first scanner-space fine-tune, always varied, called 9 of 20
# clean held-out IXI scans tier 2)
P_AS_ACQUIRED = 0.35
# share of images asked for no artefact at all (on top of GRADE_PROBS' 1 in 8): false alarms on
# clean scans are what users see first
P_ALL_CLEAN = 0.2


def shared_data_sources(data: Path) -> list[tuple[str, str, Path]]:
    """``(name, site, path)`` of every clean T1w of ``../shared/data``: the IXI HH scans (site
    ``ixi-hh``, named by subject) and the other scanners of ``vendors/`` and ``singles/`` (site =
    subject, named by the file's entities)."""
    out = [(path.name.split("_")[0][4:], "ixi-hh", path)
           for path in sorted((Path(data) / "ixi").glob("sub-*/anat/*_T1w.nii.gz"))]
    for folder in ("vendors", "singles"):
        for path in sorted((Path(data) / folder).glob("sub-*/anat/*_T1w.nii.gz")):
            site = path.name.split("_")[0][4:]
            out.append((path.name.replace("_T1w.nii.gz", "").replace("sub-", ""), site, path))
    return out


def prepare_scans(sources: list[tuple[str, str, Path]], out_dir, nprocs: int = 2,
                  finest_mm: float = FINEST_STORED_MM) -> list[Path]:
    """``sources``: ``(name, site, path)`` of clean scans. Returns the prepared ``.npz`` files
    (a scan that fails preprocessing is skipped with a warning). Voxels finer than ``finest_mm``
    are re-sampled to it (0: every scan on its own grid, as the app reads it); a file prepared
    with another ``finest_mm`` is made again."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, site, str(path), str(out_dir / f"{name}.npz"), float(finest_mm))
            for name, site, path in sources]
    return _run_jobs(_prepare_one, jobs, nprocs, "registering clean scans", "scan", "skipping")


def _run_jobs(work, jobs: list, nprocs: int, desc: str, unit: str, failed: str) -> list[Path]:
    """``work(job) -> (output path, error or None)`` over ``jobs`` in ``nprocs`` processes, with a
    progress bar; a failed job is a warning ("<failed> <output>: <error>"), never a stop. Returns
    the outputs made."""
    done = []
    with get_context("fork").Pool(max(1, nprocs)) as pool:
        for out, err in tqdm(pool.imap(work, jobs), total=len(jobs), desc=desc, unit=unit):
            if err:
                LOGGER.warning("%s %s: %s", failed, out, err)
            else:
                done.append(Path(out))
    return done


def _prepare_one(job) -> tuple[str, str | None]:
    name, site, path, out, finest_mm = job
    if Path(out).exists() and _stored_finest_mm(out) == finest_mm:
        return out, None
    try:
        pre = preprocess(path, with_registered=False)
        if pre.scaled is None:
            return out, "no model-box volume (partial coverage)"
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        affine = img.affine
        zooms = ss.voxel_sizes(affine)
        if zooms.min() < finest_mm:
            data, affine = ss.resample_to(data, affine, np.maximum(zooms, finest_mm))
        tmp = Path(out).with_suffix(".tmp.npz")
        np.savez(tmp, data=data, affine=affine,
                 matrix=np.asarray(pre.record["registration"]["template_to_subject_ras"]),
                 meta=json.dumps({"name": name, "site": site, "source": path,
                                  "finest_mm": finest_mm}))
        tmp.replace(out)
        return out, None
    except Exception as exc:  # one bad source scan must not stop the run
        return out, str(exc)


def _stored_finest_mm(path) -> float:
    """The ``finest_mm`` a prepared file was made with (files from before it was recorded: the
    default)."""
    with np.load(path) as z:
        return float(json.loads(str(z["meta"])).get("finest_mm", FINEST_STORED_MM))


def load_scan_npz(path) -> ss.NativeScan:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        return ss.NativeScan(z["data"], z["affine"], z["matrix"].tolist(), meta["name"], meta["site"])


def preprocess_variant(scan: ss.NativeScan, data: np.ndarray, affine, grid: ModelGrid = ModelGrid(),
                       with_registered: bool = False):
    """A simulated variant of ``scan`` (``data`` on ``affine``, file voxel order) through the app's
    preprocessing with the clean scan's registration (the head did not move in world space:
    :func:`bids_qc.preprocessing.preprocess_volume`). Returns its ``Preprocessed``."""
    return preprocess_volume(*ss.to_ras(data, affine), grid=grid, with_registered=with_registered,
                             transform=ras_matrix_to_transform(scan.template_to_subject))


def make_image(scan: ss.NativeScan, grades: dict, rng: np.random.Generator,
               grid: ModelGrid = ModelGrid(), site: bool = True) -> tuple[np.ndarray, dict, dict]:
    """One scanner-space image of ``scan`` asked for ``grades``. Returns ``(box at reference
    scale, measured grades, record of what was done)``."""
    data, affine = scan.data, scan.affine
    site_params = ss.sample_site(rng, ss.voxel_sizes(affine)) if site else None
    if site_params:
        data, affine = ss.apply_site(data, affine, site_params)
    wm, gm = ss.tissue_masks(data.shape, affine, scan.template_to_subject)
    applied = ss.sample_artefacts(grades, rng)
    data, evidence = ss.apply_artefacts(data, affine, applied, wm, gm)
    if site_params:
        data = ss.quantise(data, site_params["bits"])
    measured = ss.measured_grades(applied, evidence)
    pre = preprocess_variant(scan, data, affine, grid)
    record = {"scan": scan.name, "site": scan.site, "asked": grades, "grades": measured,
              "site_variation": site_params, "artefacts": applied,
              "evidence": {k: round(float(v), 4) for k, v in evidence.items()}}
    return pre.scaled.astype(np.float16), measured, record


def _generate_one(job) -> tuple[str, str | None]:
    index, seed, scan_path, out, grid_dict, probs = job
    if Path(out).exists():
        return out, None
    try:
        rng = np.random.default_rng([seed, index])
        grades = draw_grades(rng, probs)
        if rng.random() < P_ALL_CLEAN:
            grades = dict.fromkeys(grades, 0)
        site = bool(rng.random() >= P_AS_ACQUIRED)
        box, measured, record = make_image(load_scan_npz(scan_path), grades, rng,
                                           ModelGrid.from_dict(grid_dict), site=site)
        tmp = Path(out).with_suffix(".tmp.npz")
        np.savez(tmp, box=box, grades=np.array([measured[a] for a in ARTEFACTS]),
                 record=json.dumps(record))
        tmp.replace(out)
        return out, None
    except Exception as exc:
        return out, f"{scan_path}: {exc}"


def choose_scans(scans: list[Path], sites: list[str], n: int, seed: int,
                 site_weights: dict | None = None) -> list[Path]:
    """``n`` scans drawn with replacement; each site gets ``site_weights[site]`` (default equal
    shares among the sites not named) of the draws, spread evenly over its scans."""
    rng = np.random.default_rng([seed, 7])
    unique = sorted(set(sites))
    weights = dict(site_weights or {})
    rest = [s for s in unique if s not in weights]
    left = max(0.0, 1.0 - sum(weights.get(s, 0.0) for s in unique))
    for s in rest:
        weights[s] = left / len(rest)
    p_site = np.array([weights[s] for s in unique], float)
    p_site /= p_site.sum()
    by_site = {s: [p for p, t in zip(scans, sites) if t == s] for s in unique}
    chosen = []
    for s in rng.choice(unique, size=n, p=p_site):
        chosen.append(by_site[s][int(rng.integers(len(by_site[s])))])
    return chosen


def generate(scans: list[Path], n: int, out_dir, seed: int, grid: ModelGrid = ModelGrid(),
             nprocs: int = 2, site_weights: dict | None = None, probs=GRADE_PROBS) -> list[Path]:
    """Write ``n`` images (``out_dir/img-00000.npz`` ...); existing ones are kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sites = [load_site(p) for p in scans]
    chosen = choose_scans(scans, sites, n, seed, site_weights)
    jobs = [(i, seed, str(p), str(out_dir / f"img-{i:05d}.npz"), grid.to_dict(), tuple(probs))
            for i, p in enumerate(chosen)]
    return _run_jobs(_generate_one, jobs, nprocs, "scanner-space images", "image", "image not made:")


def load_site(path) -> str:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))["site"]


class GeneratedSet(Dataset):
    """Images written by :func:`generate`, normalised as ``grid`` says; ``(x (1,D,H,W), grades
    (3,))``. The interface :func:`bids_qc.training.loop.train_detectors` needs (``set_epoch``,
    ``grades``); the images are the same every epoch."""

    def __init__(self, files: list[Path], grid: ModelGrid = ModelGrid()):
        self.files = sorted(files)
        self.grid = grid
        self._grades = []
        for f in self.files:
            with np.load(f) as z:
                self._grades.append({a: int(g) for a, g in zip(ARTEFACTS, z["grades"])})
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def grades(self, index: int) -> dict:
        return self._grades[index]

    def record(self, index: int) -> dict:
        with np.load(self.files[index]) as z:
            return json.loads(str(z["record"]))

    def __getitem__(self, index: int):
        with np.load(self.files[index]) as z:
            box = z["box"].astype(np.float32)
        x = self.grid.normalise(box)
        return torch.from_numpy(x)[None], torch.tensor([self._grades[index][a] for a in ARTEFACTS])
