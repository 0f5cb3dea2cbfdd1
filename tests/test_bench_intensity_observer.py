"""bids_qc.evaluation.intensity_observer (benchmarks/bench_intensity_observer.py): intensity
features, the observer and its comparison."""
import numpy as np
import pytest

from bids_qc.evaluation import intensity_observer as observer
from bids_qc.grading import LABEL_SCHEMES
from bids_qc.masks import priors_on_grid
from bids_qc.preprocessing import ModelGrid
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.simulation import simulate
from bids_qc.training.data import simulated_draws

pytest.importorskip("sklearn", reason="the observer benchmark needs scikit-learn")


def _phantom(seed: int = 0) -> np.ndarray:
    grid = ModelGrid()
    gm, wm = priors_on_grid(grid.affine, grid.shape)
    rng = np.random.default_rng(seed)
    return (200 * wm + 120 * gm + 20 + rng.normal(0, 2, grid.shape)).clip(0).astype(np.float32)


def test_features_see_a_gamma_as_grey_matter_nearer_white():
    grid = ModelGrid()
    features = observer.IntensityFeatures(grid)
    clean = _phantom()
    gamma = clean.max() * (clean / clean.max()) ** 0.8
    f_clean, f_gamma = features(grid.normalise(clean)), features(grid.normalise(gamma))
    assert f_clean.shape == (36,) and np.isfinite(f_clean).all()
    assert f_gamma[-4] > f_clean[-4]  # grey / white median ratio up
    assert f_gamma[-3] < f_clean[-3]  # normalised grey-white difference down


def test_simulated_draws_repeat_for_the_same_seed_and_match_simulate():
    grid = ModelGrid()
    clean = _phantom()
    first = list(simulated_draws(clean, grid.affine, np.random.default_rng([7, 0]), 3, "uniform"))
    again = list(simulated_draws(clean, grid.affine, np.random.default_rng([7, 0]), 3, "uniform"))
    assert len(first) == 3
    for (g1, x1), (g2, x2) in zip(first, again):
        assert g1 == g2 and np.array_equal(x1, x2)
    rng = np.random.default_rng([7, 0])
    grades = {a: int(rng.choice(3, p=(0.5, 0.25, 0.25))) for a in ARTEFACTS}
    image, _ = simulate(clean, grid.affine, grades, rng, "uniform")
    assert grades == first[0][0] and np.array_equal(image, first[0][1])


def _rows(n: int, rng, shift: float):
    """Fake rows: contrast grade moves feature 0 by ``shift`` per grade; the rest is noise."""
    grades = rng.integers(0, 3, size=(n, len(ARTEFACTS)))
    features = rng.normal(0, 1, size=(n, 5))
    features[:, 0] += shift * grades[:, ARTEFACTS.index("contrast")]
    return features, grades


def test_compare_scores_the_observer_beside_the_network_on_the_same_images():
    rng = np.random.default_rng(0)
    f_train, g_train = _rows(400, rng, 3.0)
    subjects = np.repeat([f"S{i}" for i in range(40)], 10)
    f_test, g_test = _rows(200, rng, 3.0)
    contrast = g_test[:, ARTEFACTS.index("contrast")]
    probs = np.full((200, len(DETECTORS)), 0.5)
    probs[:, DETECTORS.index("contrast_moderate")] = 1.0 - contrast / 2  # ranks grade 1 below grade 0
    test = {"features": f_test, "grades": g_test, "probs": probs, "seed": np.repeat([1, 2], 100),
            "subject": np.repeat([f"T{i}" for i in range(20)], 10)}
    r = observer.compare("contrast_moderate", LABEL_SCHEMES, (f_train, g_train, subjects), test, [1, 2],
                         0.5)
    assert r["n"] == int((contrast < 2).sum())
    assert r["observer_auc"] > 0.9 and r["network_auc"] == pytest.approx(0.0)
    assert set(r["by_seed"]) == {1, 2}
    assert r["network_errors_by_subject"]["total"] == int((contrast == 0).sum())  # 1.0: false alarms
    y_train = observer.detector_labels("contrast_moderate", g_train, LABEL_SCHEMES)
    y = observer.detector_labels("contrast_moderate", g_test, LABEL_SCHEMES)
    keep, k = y_train >= 0, y >= 0
    curve = observer.learning_curve(f_train[keep], y_train[keep], subjects[keep], f_test[k], y[k], [5, 40],
                                    repeats=2)
    assert set(curve) == {5, 40} and curve[40][1] == 0.0 and curve[40][0] > 0.9


def test_errors_by_subject_counts_wrong_calls():
    out = observer.errors_by_subject([1, 0, 1, 0], [False, True, True, False], ["a", "a", "b", "b"])
    assert out == {"total": 2, "top": [("a", 2)]}
