"""SlabNet: a small 2D CNN over a triplet of adjacent sagittal slices (3 channels, 128 x 128).

Five ``Conv2d(3x3) -> BatchNorm -> ReLU -> MaxPool(2)`` blocks (16-32-64-128-128 channels), global
average pooling, ``Dropout -> Linear(128, 32) -> ReLU -> Linear(32, 1)``: one motion logit per
triplet. About 0.3 M parameters: a whole head is ~60 triplets and scores in well under a second.

``input_blur_mm`` > 0 puts a fixed in-plane Gaussian (sigma in mm, slices of 2 mm) before the
first block, in training and at inference alike: every scanner's slices are brought to one coarser
sharpness, so that how sharp a scanner is cannot be read as motion. It is part of the model (its
folder's manifest says ``input.blur_mm``), not of the stacking.

``norm`` chooses the normalisation of each block: ``"batch"`` (BatchNorm, running statistics of
the training batches; the shipped v1) or ``"instance"`` (InstanceNorm with a learnt scale and
shift: every feature map is normalised over its own triplet, so a scanner's overall level of
contrast and edge energy, the same in all of its triplets, is divided out at every block and only
how it is arranged - ghosts, ringing, doubled edges - is left; the manifest's ``network.norm``).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from bids_qc.slab_detector.slices import SPACING_MM

CHANNELS = (16, 32, 64, 128, 128)


def gaussian_kernel(sigma_vox: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma_vox))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    return k / k.sum()


NORMS = {"batch": lambda c: nn.BatchNorm2d(c),
         "instance": lambda c: nn.InstanceNorm2d(c, affine=True)}


class SlabNet(nn.Module):
    def __init__(self, dropout: float = 0.3, input_blur_mm: float = 0.0, norm: str = "batch"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, not {norm!r}")
        self.norm = norm
        self.input_blur_mm = float(input_blur_mm)
        if self.input_blur_mm > 0:  # not a weight: rebuilt from the manifest, not stored
            self.register_buffer("blur", gaussian_kernel(self.input_blur_mm / SPACING_MM), persistent=False)
        layers, c_in = [], 3
        for c_out in CHANNELS:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), NORMS[norm](c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> (N,) motion logits."""
        if self.input_blur_mm > 0:
            x = self._blur(x)
        return self.head(self.features(x))[:, 0]

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable in-plane Gaussian per slice, edges replicated."""
        c, r = x.shape[1], self.blur.numel() // 2
        kx = self.blur.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kx.transpose(2, 3), groups=c)


class AgreeingSlabNets(nn.Module):
    """Several trained SlabNets that must all say motion: for each triplet, every member's logit
    minus the logit of that member's own threshold, shape ``(N, members)``. A scan's score is
    the smallest of the members' mean margins (:func:`bids_qc.slab_detector.detector.score_stack`),
    so it is >= 0 (probability >= 0.5) exactly when every member's own verdict is motion."""

    def __init__(self, members: list[SlabNet], thresholds: list[float]):
        super().__init__()
        if len(members) != len(thresholds) or not members:
            raise ValueError("one threshold per member, at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("logit_thresholds", torch.logit(torch.tensor(thresholds, dtype=torch.float32)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members], dim=1) - self.logit_thresholds
