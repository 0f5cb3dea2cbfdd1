"""Self-describing model folders: ``manifest.json`` + ``weights*.safetensors`` (+ MODEL_CARD.md).

A folder holds one or more *members* (e.g. the cross-validation folds of a fine-tuned model);
each member is one safetensors file with the six detectors, keys ``<detector>.<parameter>``.
Loading verifies every file's sha256 and the declared input geometry, and fails with a
:class:`~bids_qc.exceptions.ModelError` naming the folder.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bids_qc.exceptions import ModelError
from bids_qc.networks import Conv5FC3
from bids_qc.preprocessing import PREPROCESSING_VERSION, ModelGrid
from bids_qc.record import DETECTORS

LOGGER = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: Path, files: dict[str, str]) -> None:
    """Every ``{name: sha256}`` of a manifest exists in ``folder`` and matches; else
    :class:`ModelError` naming the folder and the file."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(folder, f"weights file {name} is missing")
        actual = sha256(path)
        if actual != expected:
            raise ModelError(folder, f"checksum mismatch for {name}: manifest says {expected[:12]}..., "
                             f"file is {actual[:12]}... (corrupted or replaced)")


def state_to_tensors(nets: dict[str, Conv5FC3], dtype=torch.float16) -> dict[str, torch.Tensor]:
    """Flatten detector state dicts into one safetensors mapping (floats cast to ``dtype``)."""
    out = {}
    for det, net in nets.items():
        for key, value in net.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            out[f"{det}.{key}"] = value.detach().to(dtype).contiguous()
    return out


def tensors_to_nets(tensors: dict[str, torch.Tensor], grid: ModelGrid, folder) -> dict[str, Conv5FC3]:
    nets = {}
    for det in DETECTORS:
        prefix = f"{det}."
        state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        if not state:
            raise ModelError(folder, f"weights have no tensors for detector {det!r}")
        net = Conv5FC3(grid.shape)
        expected = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
        for key, shape in expected.items():
            if key not in state:
                raise ModelError(folder, f"detector {det}: missing tensor {key}")
            if tuple(state[key].shape) != tuple(shape):
                raise ModelError(folder, f"detector {det}: tensor {key} has shape "
                                 f"{tuple(state[key].shape)}, the network needs {tuple(shape)}")
        net.load_state_dict(state, strict=False)
        net.eval()
        nets[det] = net
    return nets


def as_saved(members: list[dict[str, Conv5FC3]], grid: ModelGrid,
             dtype=torch.float16) -> list[dict[str, Conv5FC3]]:
    """The members as :func:`save_bundle` then :func:`load_bundle` give them back (weights
    stored as ``dtype``), without touching the disk."""
    return [tensors_to_nets(state_to_tensors(nets, dtype), grid, "<in memory>") for nets in members]


@dataclass
class DetectorBundle:
    """The six detectors (one dict per ensemble member) and the manifest describing them."""

    folder: Path
    manifest: dict
    members: list[dict[str, Conv5FC3]] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return self.manifest.get("model_id", self.folder.name)

    @property
    def trained(self) -> bool:
        return bool(self.manifest.get("trained", False))

    @property
    def grid(self) -> ModelGrid:
        return ModelGrid.from_dict(self.manifest["input"])

    @property
    def thresholds(self) -> dict[str, float]:
        dets = self.manifest.get("detectors", {})
        return {d: float(dets.get(d, {}).get("threshold", 0.5)) for d in DETECTORS}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Positive-class probability per detector, mean and std over members. x: (N,1,D,H,W)."""
        per_member = {d: [] for d in DETECTORS}
        for nets in self.members:
            for det, net in nets.items():
                per_member[det].append(torch.softmax(net(x), dim=1)[:, 1].numpy())
        mean = {d: np.mean(v, axis=0) for d, v in per_member.items()}
        std = {d: np.std(v, axis=0) for d, v in per_member.items()}
        return mean, std


def read_manifest(folder, architecture: str) -> dict:
    """The verified manifest of a model folder of ``architecture`` (every model folder, the six
    detectors' bundle and the slab detector alike): it exists and parses, names ``architecture``,
    and every listed weights file matches its sha256. Raises :class:`ModelError` naming the folder."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(folder, f"no {MANIFEST} (is this a bids_qc model folder?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(folder, f"{MANIFEST} is unreadable: {exc}") from exc
    for key in ("input", "files", "architecture"):
        if key not in manifest:
            raise ModelError(folder, f"{MANIFEST} lacks the key {key!r}")
    if manifest["architecture"] != architecture:
        raise ModelError(folder, f"architecture {manifest['architecture']!r}, expected {architecture!r}")
    verify_files(folder, manifest["files"])
    return manifest


def load_tensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(Path(folder) / name))
    except Exception as exc:
        raise ModelError(folder, f"{name} is not a readable safetensors file: {exc}") from exc


def load_bundle(folder) -> DetectorBundle:
    """Load and verify a model folder. Raises :class:`ModelError` naming the folder."""
    folder = Path(folder)
    manifest = read_manifest(folder, "Conv5FC3")
    if str(manifest.get("preprocessing_version")) != PREPROCESSING_VERSION:
        LOGGER.warning("model %s was made for preprocessing version %s, this is %s", folder,
                       manifest.get("preprocessing_version"), PREPROCESSING_VERSION)
    try:
        grid = ModelGrid.from_dict(manifest["input"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(folder, f"input description in {MANIFEST} is invalid: {exc}") from exc
    bundle = DetectorBundle(folder=folder, manifest=manifest)
    for name in manifest["files"]:
        bundle.members.append(tensors_to_nets(load_tensors(folder, name), grid, folder))
    if not bundle.members:
        raise ModelError(folder, "the manifest lists no weights files")
    return bundle


def write_folder(folder, weights: dict[str, dict[str, torch.Tensor]], manifest: dict) -> Path:
    """Write a model folder: each ``{file name: tensors}`` as safetensors, then ``manifest.json``
    (``manifest`` + format version, creation time and the sha256 of each file; it must name its
    ``model_id``, ``architecture`` and ``input``). Each file is written atomically
    (:mod:`bids_qc.outputs`; the group level writes fine-tuned models into the derivatives), the
    manifest last: a folder without it is not a model."""
    from bids_qc.outputs import atomic_path, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, tensors in weights.items():
        with atomic_path(folder / name) as tmp:
            save_file(tensors, str(tmp), metadata={"model_id": manifest["model_id"]})
        files[name] = sha256(folder / name)
    head = {"format_version": FORMAT_VERSION, "model_id": manifest["model_id"],
            "architecture": manifest["architecture"], "trained": manifest.get("trained", True),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(folder / MANIFEST, json.dumps({**head, **manifest, "files": files}, indent=2) + "\n")
    return folder


def save_bundle(folder, members: list[dict[str, Conv5FC3]], *, model_id: str, trained: bool,
                grid: ModelGrid, detectors: dict, extra: dict | None = None,
                dtype=torch.float16) -> Path:
    """Write a model folder of ``members`` (:func:`write_folder`). Returns the folder."""
    names = ["weights.safetensors"] if len(members) == 1 else \
        [f"weights-member{i}.safetensors" for i in range(len(members))]
    manifest = {"model_id": model_id, "architecture": "Conv5FC3", "trained": trained,
                "input": {**grid.to_dict(), "channels": 1},
                "preprocessing_version": PREPROCESSING_VERSION, "detectors": detectors, **(extra or {})}
    return write_folder(folder, {name: state_to_tensors(nets, dtype) for name, nets in zip(names, members)},
                        manifest)


def make_untrained_bundle(folder, grid: ModelGrid = ModelGrid(), seed: int = 0) -> Path:
    """Write a model folder of randomly initialised detectors (manifest says trained: false).

    For tests and for bootstrapping training; the app warns loudly when it uses one.
    """
    from bids_qc.grading import LABEL_SCHEMES

    torch.manual_seed(seed)
    nets = {d: Conv5FC3(grid.shape).eval() for d in DETECTORS}
    detectors = {d: {**LABEL_SCHEMES[d], "threshold": 0.5} for d in DETECTORS}
    return save_bundle(folder, [nets], model_id=f"conv5fc3-untrained-seed{seed}", trained=False,
                       grid=grid, detectors=detectors, extra={"seed": seed})
