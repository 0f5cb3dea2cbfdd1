"""bids_qc.evaluation (benchmarks/bench_heldout.py): each artefact alone vs clean, the detector
beside its baseline metric; invariance counts."""
import numpy as np
import pytest

from bids_qc.evaluation.baseline_metrics import BaselineMetrics, artefact_vs_clean
from bids_qc.evaluation.invariance import invariance
from bids_qc.masks import priors_on_grid
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.simulation import SEVERITY_NAMES


def _phantom() -> np.ndarray:
    """Tissue on the model grid from the template priors (WM 200, GM 120, reference scale)."""
    grid = ModelGrid()
    gm, wm = priors_on_grid(grid.affine, grid.shape)
    rng = np.random.default_rng(0)
    return (200 * wm + 120 * gm + rng.normal(0, 1, grid.shape)).clip(0).astype(np.float32)


def test_baseline_metrics_say_worse_for_each_artefact():
    metrics = BaselineMetrics(ModelGrid())
    clean = _phantom()
    noisy = clean + np.random.default_rng(1).normal(0, 15, clean.shape).astype(np.float32)
    low_contrast = (clean / clean.max()) ** 0.8 * clean.max()  # gamma < 1: grey nearer white
    base = metrics(clean)
    assert metrics(noisy)["noise"] > base["noise"]
    assert metrics(low_contrast)["contrast"] > base["contrast"]


def _row(artefact, grade, det_score, metric_score):
    probs = {f"{a}_{s}": 0.0 for a in ARTEFACTS for s in SEVERITY_NAMES.values()}
    scores = dict.fromkeys(ARTEFACTS, 0.0)
    if artefact:
        probs[f"{artefact}_{SEVERITY_NAMES[grade]}"] = det_score
        scores[artefact] = metric_score
    return (artefact, grade, probs, scores)


def test_each_artefact_is_scored_against_the_shared_clean_images(capsys):
    rows = [_row(None, 0, 0, 0) for _ in range(3)]
    # contrast: the detector ranks every artefact image above clean, the metric ranks them below
    rows += [_row("contrast", g, 0.9, -1.0) for g in (1, 1, 2, 2)]
    rows += [_row(a, g, 0.9, 1.0) for a in ("motion", "noise") for g in (1, 1, 2, 2)]
    out = artefact_vs_clean(rows)
    cm = out["contrast"]["moderate vs clean"]
    assert out["contrast"]["metric"] == "ND-WGM"
    assert cm["detector"] == "contrast_moderate" and cm["n"] == 5  # 3 clean + 2 moderate only
    assert cm["detector_auc"] == pytest.approx(1.0) and cm["metric_auc"] == pytest.approx(0.0)
    assert out["motion"]["severe vs clean"]["metric_auc"] == pytest.approx(1.0)
    assert "contrast moderate vs clean" in capsys.readouterr().out


def test_invariance_counts_clean_scans_called_positive_at_each_factor(capsys):
    factors = (0.95, 1.0, 1.05)
    thresholds = {d: 0.5 for d in DETECTORS}
    # two scans: the contrast detector follows the factor (positive when brightened), the rest flat
    rows = [[{d: (p if d == "contrast_moderate" else 0.1) for d in DETECTORS} for p in ps]
            for ps in ((0.9, 0.4, 0.1), (0.6, 0.6, 0.2))]
    out = invariance(rows, thresholds, factors, "Clip-level invariance: {n} scans at {factors}")
    assert out["factors"] == [0.95, 1.0, 1.05] and out["n_scans"] == 2
    assert out["detectors"]["contrast_moderate"]["positive"] == [2, 1, 0]
    assert out["detectors"]["contrast_moderate"]["mean_abs_shift"] == pytest.approx((0.8 + 0.4) / 2)
    assert out["detectors"]["motion_severe"] == {"positive": [0, 0, 0], "mean_abs_shift": 0.0}
    assert "Clip-level invariance: 2 scans at (0.95, 1.0, 1.05)" in capsys.readouterr().out
