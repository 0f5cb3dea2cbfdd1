"""Decision thresholds chosen on validation images (Youden's J, then jointly for the tiers)."""
import numpy as np
import pytest
import torch
from test_training import TINY, tiny_entries
from torch import nn

from bids_qc.grading import (
    LABEL_SCHEMES,
    grades_from_probabilities,
    grades_of,
    tier_from_grades,
    tiers_of,
)
from bids_qc.training.calibration import (
    calibrate_thresholds,
    check_keep_youden,
    detector_labels,
    tier_objective,
    tier_thresholds,
    youden_threshold,
)
from bids_qc.training.data import SimulatedSet
from bids_qc.training.evaluate import tier_scores


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


def test_youden_threshold_without_bounds_is_the_best_balanced_accuracy_of_any_threshold():
    """bench_heldout's upper bound: no threshold may beat the one it reports."""
    from bids_qc.training.metrics import binary_scores

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(rng.normal(0.45 + 0.1 * labels, 0.15), 0, 1)  # overlapping classes
    best = binary_scores(labels, probs >= youden_threshold(labels, probs, bounds=(0.0, 1.0)))
    every = [binary_scores(labels, probs >= t)["balanced_accuracy"] for t in np.linspace(0, 1, 1001)]
    assert best["balanced_accuracy"] >= max(every) - 1e-12


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


def _six_detectors_one_shy_of_clean_scans(seed=0):
    """Validation-like arrays: 300 images with random grades (the first 60 clean); every detector
    separates its classes perfectly except moderate contrast, whose true positives spread over
    0.6-1 and which also gives 0.6-0.8 to 20 clean images (natural-low-contrast subjects)."""
    rng = np.random.default_rng(seed)
    grades = rng.choice(3, size=(300, 3), p=[0.6, 0.25, 0.15])
    grades[:60] = 0
    labels = detector_labels(grades, LABEL_SCHEMES)
    probs = {d: np.where(y == 1, rng.uniform(0.85, 1, len(y)), rng.uniform(0, 0.3, len(y)))
             for d, y in labels.items()}
    contrast = labels["contrast_moderate"] == 1
    probs["contrast_moderate"][contrast] = rng.uniform(0.6, 1, contrast.sum())
    probs["contrast_moderate"][:20] = rng.uniform(0.6, 0.8, 20)
    return grades, probs


def test_tier_thresholds_raise_the_detector_that_fires_on_clean_scans_and_leave_the_rest():
    grades, probs = _six_detectors_one_shy_of_clean_scans()
    labels = detector_labels(grades, LABEL_SCHEMES)
    youden = {d: youden_threshold(labels[d][labels[d] >= 0], probs[d][labels[d] >= 0]) for d in probs}
    assert youden["contrast_moderate"] < 0.6  # Youden keeps every positive and pays 20 false alarms
    chosen = tier_thresholds(grades, probs, youden)
    assert chosen["contrast_moderate"] > youden["contrast_moderate"] + 0.1
    assert {d: t for d, t in chosen.items() if d != "contrast_moderate"} == \
        {d: t for d, t in youden.items() if d != "contrast_moderate"}
    assert tier_objective(grades, probs, chosen, labels) > tier_objective(grades, probs, youden, labels)
    before = tier_scores(tiers_of(grades), tiers_of(grades_of(probs, youden)))["tier_1_vs_2"]
    after = tier_scores(tiers_of(grades), tiers_of(grades_of(probs, chosen)))["tier_1_vs_2"]
    assert after["specificity"] > before["specificity"] + 0.05
    assert after["balanced_accuracy"] > before["balanced_accuracy"]


def test_tier_thresholds_keep_the_start_when_nothing_is_gained():
    grades, probs = _six_detectors_one_shy_of_clean_scans()
    probs["contrast_moderate"][:20] = 0.1  # now every detector separates perfectly
    start = {d: 0.5 for d in probs}
    assert tier_thresholds(grades, probs, start) == start


def test_grades_and_tiers_follow_the_rule_for_many_images_at_once():
    """Severe fires -> 2, else moderate fires -> 1, else 0; tier 1 all 0, 3 any 2, else 2."""
    probs = {"motion_moderate": [0.9, 0.9, 0.1, 0.1], "motion_severe": [0.7, 0.6, 0.1, 0.1],
             "noise_moderate": [0.1, 0.1, 0.5, 0.1], "noise_severe": [0.1, 0.1, 0.1, 0.1],
             "contrast_moderate": [0.1, 0.1, 0.1, 0.1], "contrast_severe": [0.1, 0.1, 0.1, 0.1]}
    thresholds = {"motion_severe": 0.65}
    assert grades_of(probs, thresholds).tolist() == [[2, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert tiers_of(grades_of(probs, thresholds)).tolist() == [3, 2, 2, 1]
    one = {d: p[1] for d, p in probs.items()}
    assert grades_from_probabilities(one, thresholds) == {"motion": 1, "noise": 0, "contrast": 0}
    assert tier_from_grades({"motion": 1, "noise": 0, "contrast": 0}) == 2


def test_calibration_objective_is_checked():
    with pytest.raises(ValueError, match="unknown calibration objective"):
        calibrate_thresholds([], objective="f1")
    entries = tiny_entries(2)
    val = SimulatedSet(entries, n_per_subject=2, seed=3, grid=TINY)
    with pytest.raises(ValueError, match="all six"):
        calibrate_thresholds([({"noise_moderate": ShiftedMeanDetector()}, val)], objective="tiers")


def test_tier_thresholds_leave_a_fixed_detector_at_its_start():
    grades, probs = _six_detectors_one_shy_of_clean_scans()
    labels = detector_labels(grades, LABEL_SCHEMES)
    youden = {d: youden_threshold(labels[d][labels[d] >= 0], probs[d][labels[d] >= 0]) for d in probs}
    free = tier_thresholds(grades, probs, youden)
    assert free["contrast_moderate"] != youden["contrast_moderate"]  # the ascent would move it ...
    fixed = tier_thresholds(grades, probs, youden, fixed=("contrast_moderate",))
    assert fixed["contrast_moderate"] == youden["contrast_moderate"]  # ... but it is kept
    assert {d: t for d, t in fixed.items() if d != "contrast_moderate"} == \
        {d: t for d, t in youden.items() if d != "contrast_moderate"}


def test_keep_youden_is_checked():
    entries = tiny_entries(2)
    val = SimulatedSet(entries, n_per_subject=2, seed=3, grid=TINY)
    with pytest.raises(ValueError, match="needs objective 'tiers'"):
        calibrate_thresholds([({"noise_moderate": ShiftedMeanDetector()}, val)], keep_youden=["noise_moderate"])
    with pytest.raises(ValueError, match=r"unknown detector\(s\) \['noise_sever'\]"):
        check_keep_youden(["noise_sever"], "tiers")
    check_keep_youden(["noise_severe"], "tiers")
    check_keep_youden([], "youden")


def test_calibrate_cli_refuses_keep_youden_without_tiers_before_any_work(tmp_path):
    from bids_qc.cli.calibrate import main

    with pytest.raises(SystemExit, match="needs objective 'tiers'"):
        main([str(tmp_path / "no-model"), str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
              "--keep-youden", "noise_severe"])
    assert not (tmp_path / "cache").exists()
