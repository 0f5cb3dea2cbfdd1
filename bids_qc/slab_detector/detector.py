"""Load a slab motion model folder and score scans with it.

A folder holds ``weights.safetensors`` and ``manifest.json`` (architecture ``SlabNet``, threshold,
sha256 of the weights), written and verified by :mod:`bids_qc.models` like every model folder. The score of a scan is the sigmoid of the mean logit over its slice
triplets (:mod:`.slices`); scans whose stack has no triplet with head in it get no score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nibabel.affines import voxel_sizes

from bids_qc.config import DEFAULT_SLAB_MODEL_DIR
from bids_qc.exceptions import ModelError
from bids_qc.preprocessing import MIN_EXTENT_MM
from bids_qc.slab_detector.network import AgreeingSlabNets, SlabNet
from bids_qc.slab_detector.slices import (
    HEAD_FRACTION_OF_PEAK,
    to_ras_stack,
    triplet_centres,
    triplets,
)

ARCHITECTURE = "SlabNet"
# Coarser voxels than this along any axis (thick 2D slices) get a score but no verdict: the score
# rises with through-slice blur, not only with motion (clean IXI scans resampled to 2.4 mm slices
# gain 7-8 logits and 2 of 4 cross the threshold; every image of a 4.8 mm 2D scanner, moving or
# not, is above it), so only that scanner's own rated scans can place a threshold.
MAX_VOXEL_MM = 2.5


@torch.no_grad()
def score_stack(net: SlabNet | AgreeingSlabNets, stack: np.ndarray, stride: int = 1,
                batch: int = 32) -> float | None:
    """Motion probability of a RAS 2 mm sagittal ``stack``: the sigmoid of the mean logit over
    its triplets (for agreeing members, of the smallest member's mean margin)."""
    centres = triplet_centres(stack, HEAD_FRACTION_OF_PEAK)[::stride]
    if len(centres) == 0:
        return None
    logits = [net(torch.from_numpy(triplets(stack, centres[i:i + batch])))
              for i in range(0, len(centres), batch)]
    return float(torch.sigmoid(torch.cat(logits).mean(dim=0).min()))


@dataclass
class SlabDetector:
    folder: Path
    manifest: dict
    net: SlabNet | AgreeingSlabNets

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def fuses_motion_grade(self) -> bool:
        """Whether the app reads this model's verdict into the motion grade
        (:func:`bids_qc.verdict.slab_fused_motion`): only a model whose manifest says so
        (``"fuse_into_motion_grade": true``), as its shipping rule decided."""
        return bool(self.manifest.get("fuse_into_motion_grade", False))

    def assess(self, data: np.ndarray, affine: np.ndarray) -> dict:
        """``{"model_id", "score", "threshold", "motion", "n_triplets", "note", "fused"}`` for one
        volume (``fused``: :attr:`fuses_motion_grade`).

        Voxels coarser than :data:`MAX_VOXEL_MM` get a score but ``motion`` None (see there). A
        slab that is thin along another axis than left-right (axial or coronal) is not scored: the
        network reads sagittal slices, and such a slab shows it only thin strips of head."""
        out = {"model_id": self.model_id, "score": None, "threshold": self.threshold,
               "motion": None, "n_triplets": 0, "note": None, "fused": self.fuses_motion_grade}
        extent = ras_extent_mm(data.shape, affine)
        thin = int(np.argmin(extent))
        if extent[thin] < MIN_EXTENT_MM and thin != 0:
            out["note"] = (f"not scored: {('a sagittal', 'a coronal', 'an axial')[thin]} slab "
                           f"({extent[thin]:.0f} mm thick); the slab detector reads sagittal slices")
            return out
        stack = to_ras_stack(data, affine)
        out["n_triplets"] = int(len(triplet_centres(stack, HEAD_FRACTION_OF_PEAK)))
        out["score"] = score_stack(self.net, stack)
        out["motion"], out["note"] = self.verdict(out["score"], voxel_sizes(affine))
        return out

    def verdict(self, score: float | None, voxel_mm) -> tuple[bool | None, str | None]:
        """``(motion, note)`` for a scan's score and its voxel sizes (mm): the one rule the app
        and the benchmarks apply. No verdict without a score, nor for voxels coarser than
        :data:`MAX_VOXEL_MM`; the note says why."""
        coarsest = float(np.max(voxel_mm))
        if score is None:
            return None, "not scored: no sagittal slice holds enough head"
        if coarsest > MAX_VOXEL_MM:
            return None, (f"no verdict: {coarsest:.1f} mm voxels (thick slices) raise the score "
                          "without motion; rank these scans by the score or set the site's "
                          "threshold from ratings (group --annotations)")
        return bool(score >= self.threshold), None


def ras_extent_mm(shape, affine: np.ndarray) -> np.ndarray:
    """Field of view (mm) along the R, A and S axes of the voxel grid's closest RAS orientation."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    zooms = voxel_sizes(affine)
    extent = np.zeros(3)
    for voxel_axis, (ras_axis, _) in enumerate(ornt):
        extent[int(ras_axis)] = shape[voxel_axis] * zooms[voxel_axis]
    return extent


def _half_state(net: SlabNet) -> dict[str, torch.Tensor]:
    """The weights as stored: float16, without BatchNorm's batch counters."""
    return {k: v.detach().half().contiguous() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def save_detector(folder, net: SlabNet, *, model_id: str, threshold: float, extra: dict) -> Path:
    """Write a slab model folder through :func:`bids_qc.models.write_folder` (one layout for
    every model folder)."""
    from bids_qc.models import write_folder

    state = _half_state(net)
    manifest = {"model_id": model_id, "architecture": ARCHITECTURE, "trained": True,
                "input": {"slices": "3 adjacent sagittal slices, RAS, 2 mm, 128 x 128 in-plane",
                          "normalisation": "foreground p99 of each triplet = 1, clipped at 1.5",
                          "blur_mm": net.input_blur_mm},
                "network": {"norm": net.norm},
                "threshold": threshold, **extra}
    return write_folder(folder, {"weights.safetensors": state}, manifest)


def load_detector(folder=DEFAULT_SLAB_MODEL_DIR) -> SlabDetector:
    """Load and verify a slab model folder; :class:`ModelError` names the folder on any problem."""
    from bids_qc.models import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder, ARCHITECTURE)
    if "members" not in manifest:
        net = _load_net(folder, manifest, list(manifest["files"]))
    else:  # members that must agree; each names its file, threshold and network
        members = manifest["members"]
        net = AgreeingSlabNets([_load_net(folder, m, [m["file"]]) for m in members],
                               [float(m["threshold"]) for m in members])
    net.eval()
    return SlabDetector(folder, manifest, net)


def _load_net(folder: Path, spec: dict, files: list[str]) -> SlabNet:
    """A SlabNet as ``spec`` (a manifest or a member of one) describes it, weights from ``files``."""
    from bids_qc.models import load_tensors

    net = SlabNet(input_blur_mm=float(spec.get("input", {}).get("blur_mm", 0.0)),
                  norm=spec.get("network", {}).get("norm", "batch"))
    for name in files:
        state = {k: v.float() for k, v in load_tensors(folder, name).items()}
        try:
            net.load_state_dict(state, strict=False)
        except Exception as exc:
            raise ModelError(folder, f"weights do not fit SlabNet: {exc}") from exc
    return net.eval()


def save_agreeing_detector(folder, members: list[SlabDetector], *, model_id: str, extra: dict) -> Path:
    """Write a slab model folder whose verdict is motion only when every one of ``members`` (loaded
    single-network folders) says motion at its own threshold; the folder's threshold is 0.5 on
    the combined score (:class:`AgreeingSlabNets`)."""
    from bids_qc.models import write_folder

    weights, specs = {}, []
    for i, member in enumerate(members):
        name = f"member-{i}.safetensors"
        weights[name] = _half_state(member.net)
        specs.append({"model_id": member.model_id, "file": name, "threshold": member.threshold,
                      "input": member.manifest["input"],
                      "network": member.manifest.get("network", {"norm": "batch"}),
                      "source_sha256": member.manifest["files"],
                      "command": member.manifest.get("command")})
    manifest = {"model_id": model_id, "architecture": ARCHITECTURE, "trained": True,
                "input": members[0].manifest["input"], "members": specs,
                "rule": "motion only when every member says motion at its own threshold",
                "threshold": 0.5, **extra}
    return write_folder(folder, weights, manifest)
