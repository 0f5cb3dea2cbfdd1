"""Conv5FC3: the 3D CNN of the published method (ClinicaDL's Conv5_FC3 family).

Five blocks ``Conv3d(3x3x3, pad 1) -> BatchNorm3d -> ReLU -> [pad odd dims] -> MaxPool3d(2)``
with 8-16-32-64-128 channels, then ``Dropout -> Linear(., 1300) -> ReLU -> Linear(1300, 50) -> ReLU
-> Linear(50, 2)``. Input (N, 1, D, H, W) min-max normalised; output (N, 2) logits.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHANNELS = (8, 16, 32, 64, 128)


class PadMaxPool3d(nn.Module):
    """Max-pooling by 2 that first pads odd dimensions (at the end) so nothing is dropped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in reversed(x.shape[2:]):
            pads += [0, size % 2]
        if any(pads):
            x = F.pad(x, pads, mode="replicate")
        return F.max_pool3d(x, 2)


def pooled_shape(shape: tuple[int, int, int], n_blocks: int = len(CHANNELS)) -> tuple[int, int, int]:
    """Spatial shape after ``n_blocks`` pad-then-pool steps."""
    out = tuple(shape)
    for _ in range(n_blocks):
        out = tuple((s + s % 2) // 2 for s in out)
    return out


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out),
                         nn.ReLU(inplace=True), PadMaxPool3d())


class Conv5FC3(nn.Module):
    """Binary artefact detector. ``input_shape`` is (D, H, W) of the model grid."""

    def __init__(self, input_shape=(64, 80, 64), dropout: float = 0.5):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        blocks, c_in = [], 1
        for c_out in CHANNELS:
            blocks.append(conv_block(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        n_flat = CHANNELS[-1] * int(torch.tensor(pooled_shape(self.input_shape)).prod())
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(n_flat, 1300), nn.ReLU(inplace=True),
            nn.Linear(1300, 50), nn.ReLU(inplace=True), nn.Linear(50, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def fc_layers(self) -> list[nn.Linear]:
        """The three fully connected layers (the ones fine-tuning trains)."""
        return [m for m in self.classifier if isinstance(m, nn.Linear)]
