"""Simulation presets: sampled parameters in range, deterministic twins, expected effects."""
import numpy as np
import pytest

from bids_qc.simulation import PRESETS, apply, sample_params, simulate


def phantom(shape=(40, 48, 40)):
    """A bright ellipsoid 'head' with a brighter core on a zero background."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    vol = np.where(r < 0.8, 120.0, 0.0) + np.where(r < 0.5, 80.0, 0.0)
    return vol.astype(np.float32), np.diag([2.5, 2.5, 2.5, 1.0])


@pytest.mark.parametrize("key", list(PRESETS))
def test_sampled_parameters_fall_in_preset_range(key):
    artefact, severity = key
    preset = PRESETS[key]
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sample_params(artefact, severity, rng)
        if artefact == "motion":
            deg = np.abs(np.array(p["degrees"]))
            tr = np.abs(np.array(p["translation_mm"]))
            assert deg.shape == (4, 3) and tr.shape == (4, 3)
            assert deg.min() >= preset.low and deg.max() <= preset.high
            assert tr.min() >= preset.low2 and tr.max() <= preset.high2
            assert np.all(np.diff(p["times"]) >= 0) and 0 < min(p["times"]) and max(p["times"]) < 1
        elif artefact == "noise":
            assert preset.low <= p["sigma"] <= preset.high
        else:
            assert preset.low <= p["log_gamma"] <= preset.high


def test_apply_is_deterministic_given_params():
    vol, aff = phantom()
    rng = np.random.default_rng(3)
    for artefact in ("motion", "noise", "contrast"):
        p = sample_params(artefact, "severe", rng)
        np.testing.assert_array_equal(apply(vol, aff, p), apply(vol, aff, p))


def test_noise_raises_background_std_monotonically():
    vol, aff = phantom()
    background = vol == 0
    stds = [apply(vol, aff, {"artefact": "noise", "sigma": s, "rician": True, "seed": 1})[background].std()
            for s in (5, 15, 25)]
    assert stds[0] > 0 and stds[0] < stds[1] < stds[2]


def test_motion_changes_kspace_but_keeps_centre_energy():
    vol, aff = phantom()
    p = sample_params("motion", "severe", np.random.default_rng(0))
    out = apply(vol, aff, p)
    assert out.shape == vol.shape and out.dtype == np.float32
    k_in, k_out = np.abs(np.fft.fftn(vol)), np.abs(np.fft.fftn(out))
    rel = np.abs(k_out - k_in).sum() / k_in.sum()
    assert rel > 0.05  # k-space visibly altered
    assert abs(out.sum() - vol.sum()) / vol.sum() < 0.1  # total signal (DC) roughly kept


def test_gamma_lowers_contrast_between_tissues():
    vol, aff = phantom()
    out = apply(vol, aff, {"artefact": "contrast", "log_gamma": -0.4})
    inner, outer = vol == 200, vol == 120
    before = (vol[inner].mean() - vol[outer].mean()) / (vol[inner].mean() + vol[outer].mean())
    after = (out[inner].mean() - out[outer].mean()) / (out[inner].mean() + out[outer].mean())
    assert after < before


def test_simulate_records_each_applied_artefact():
    vol, aff = phantom()
    out, applied = simulate(vol, aff, {"motion": 0, "noise": 2, "contrast": 1}, np.random.default_rng(0))
    assert [p["artefact"] for p in applied] == ["contrast", "noise"]
    assert applied[1]["severity"] == "severe" and applied[0]["severity"] == "moderate"
    assert not np.array_equal(out, vol)


def test_motion_times_follow_torchio_random_motion():
    """Evenly spaced with at most 0.3 step of jitter, as RandomMotion.get_params draws them: the
    centre of k-space always falls between the 2nd and 3rd of 4 movements, whatever the draw."""
    import torch
    from torchio.transforms.augmentation.intensity.random_motion import RandomMotion

    rng = np.random.default_rng(0)
    ours = np.array([sample_params("motion", "severe", rng)["times"] for _ in range(500)])
    torch.manual_seed(0)
    theirs = np.array([RandomMotion(num_transforms=4).get_params((-5, 5), (-5, 5), 4)[0]
                       for _ in range(500)])
    for times in (ours, theirs):
        assert np.all(np.diff(times, axis=1) > 0)
        assert np.all(times[:, 1] < 0.5) and np.all(times[:, 2] > 0.5)
    # same per-movement ranges as torchio's (0.2 +- 0.06, 0.4 +- 0.06, ...)
    for k in range(4):
        assert abs(ours[:, k].min() - theirs[:, k].min()) < 0.01
        assert abs(ours[:, k].max() - theirs[:, k].max()) < 0.01


def test_uniform_motion_timing_is_still_available_and_unknown_timing_is_refused():
    rng = np.random.default_rng(1)
    times = np.array([sample_params("motion", "severe", rng, "uniform")["times"] for _ in range(500)])
    assert np.mean(times[:, 0] > 0.5) > 0.02  # the k-space centre left unmoved now and then
    with pytest.raises(ValueError, match="motion timing"):
        sample_params("motion", "severe", rng, "random")
