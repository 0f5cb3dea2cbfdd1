"""Decision thresholds chosen on validation images (Youden's J)."""
import numpy as np
import pytest
import torch
from test_training import TINY, tiny_entries
from torch import nn

from bids_qc.training.calibration import calibrate_thresholds, youden_threshold
from bids_qc.training.data import SimulatedSet


def test_youden_threshold_separates_shifted_scores():
    labels = np.array([0] * 50 + [1] * 50)
    probs = np.r_[np.linspace(0.0, 0.2, 50), np.linspace(0.25, 0.4, 50)]  # all below 0.5
    t = youden_threshold(labels, probs)
    assert 0.2 < t < 0.25
    assert ((probs >= t) == labels).all()
    assert youden_threshold([1, 1, 1], [0.1, 0.2, 0.3]) == 0.5  # one class only: no information


def test_youden_threshold_stays_within_bounds_and_prefers_half_on_ties():
    labels = np.array([0, 0, 1, 1])
    assert 0.05 <= youden_threshold(labels, [0.0, 0.001, 0.002, 0.003]) <= 0.95
    assert youden_threshold(labels, [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)


class ShiftedMeanDetector(nn.Module):
    """P(positive) = sigmoid(200 (mean intensity - 0.17) - 3): noise raises the mean of these
    min-max normalised images (clean ~0.16, noisy ~0.18), so the ranking is right but the 0.5
    point misses most noisy images."""

    def forward(self, x):
        z = 200 * (x.mean(dim=(1, 2, 3, 4)) - 0.17) - 3
        return torch.stack([torch.zeros_like(z), z], 1)


def test_calibration_moves_a_shifted_detector_threshold_and_raises_val_accuracy():
    entries = tiny_entries(4)
    val = SimulatedSet(entries, n_per_subject=24, seed=3, grid=TINY)
    result = calibrate_thresholds([({"noise_moderate": ShiftedMeanDetector()}, val)])
    c = result["noise_moderate"]
    assert c["n_images"] > 10
    assert c["threshold"] < 0.4
    assert c["val_balanced_accuracy"] > c["val_balanced_accuracy_at_0.5"] + 0.05
