"""Average several networks' probabilities; behaves like one network returning logits."""
from __future__ import annotations

import torch
from torch import nn


class MeanEnsemble(nn.Module):
    """``forward`` returns log of the members' mean softmax, so softmax(output) = mean probability."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), 1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))
