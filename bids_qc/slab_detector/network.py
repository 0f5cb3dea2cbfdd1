"""SlabNet: a small 2D CNN over a triplet of adjacent sagittal slices (3 channels, 128 x 128).

Five ``Conv2d(3x3) -> BatchNorm -> ReLU -> MaxPool(2)`` blocks (16-32-64-128-128 channels), global
average pooling, ``Dropout -> Linear(128, 32) -> ReLU -> Linear(32, 1)``: one motion logit per
triplet. About 0.3 M parameters: a whole head is ~60 triplets and scores in well under a second.
"""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = (16, 32, 64, 128, 128)


class SlabNet(nn.Module):
    def __init__(self, dropout: float = 0.3):
        super().__init__()
        layers, c_in = [], 3
        for c_out in CHANNELS:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> (N,) motion logits."""
        return self.head(self.features(x))[:, 0]
