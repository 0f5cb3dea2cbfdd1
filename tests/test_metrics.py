"""Image-quality metrics (issue 6): definitions on a phantom with known truth, robustness on bad
inputs, and calibration on a real IXI scan (noise -> SNR, gamma -> ND-WGM, motion -> sharpness)."""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_qc import masks as masks_mod
from bids_qc.images import from_sitk, to_sitk
from bids_qc.metrics import (
    aes,
    compute_metrics,
    load_priors,
    nd_wgm,
    snr,
    snr_native,
    sobel_gradient,
    tenengrad,
)
from bids_qc.preprocessing import ModelGrid

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data"))
IXI_SCAN = DATA / "ixi" / "sub-IXI012" / "anat" / "sub-IXI012_T1w.nii.gz"
TEMPLATE_T1W = ROOT / "bids_qc" / "data" / "tpl-MNI152NLin2009aSym_res-2_T1w.nii.gz"
RAYLEIGH_SD = math.sqrt(2 - math.pi / 2)  # sd of the magnitude of complex noise of sd 1
METRIC_KEYS = {"snr", "nd_wgm", "aes", "tenengrad", "snr_native"}


# ----------------------------------------------------------------------------- helpers

def rician(volume: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Magnitude of (volume + complex Gaussian noise of sd ``sigma``), as MR magnitude images."""
    rng = np.random.default_rng(seed)
    real = volume + rng.normal(0.0, sigma, volume.shape)
    imag = rng.normal(0.0, sigma, volume.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


@lru_cache(maxsize=8)
def _phantom_clean(wm: float, gm: float) -> np.ndarray:
    gm_p, wm_p = load_priors()
    brain = (gm_p + wm_p) > 0.5
    image = np.zeros(gm_p.shape, np.float32)
    image[brain & (wm_p >= gm_p)] = wm
    image[brain & (gm_p > wm_p)] = gm
    skull = ndi.binary_dilation(brain, iterations=2) & ~brain
    scalp = ndi.binary_dilation(brain, iterations=5) & ~brain & ~skull
    image[skull], image[scalp] = 10.0, 80.0
    image.flags.writeable = False
    return image


def phantom(noise: float = 2.0, wm: float = 100.0, gm: float = 60.0, seed: int = 0):
    """A head on the template grid: WM (``wm``) and GM (``gm``) where each prior dominates, a dark
    skull (10) and a scalp (80) around the brain, Rician noise of sd ``noise`` everywhere."""
    image = _phantom_clean(float(wm), float(gm))
    return rician(image, noise, seed) if noise > 0 else image.copy()


def assert_all_keys(metrics: dict, notes: dict) -> None:
    assert set(metrics) == METRIC_KEYS
    for name, value in metrics.items():
        assert isinstance(value, float)
        assert math.isfinite(value) == (name not in notes), (name, value, notes)
        if name in notes:
            assert isinstance(notes[name], str) and notes[name]


# ----------------------------------------------------------------------------- definitions

def test_priors_are_shipped_cached_and_read_only():
    gm, wm = load_priors()
    assert gm.shape == wm.shape == (99, 117, 95)
    assert gm.dtype == np.float32 and 0 <= gm.min() and wm.max() <= 1
    assert load_priors()[0] is gm
    with pytest.raises(ValueError):
        gm[0, 0, 0] = 1.0


def test_priors_resampled_onto_another_grid_keep_the_template_anatomy():
    gm, wm = load_priors()
    same = masks_mod.priors_on_grid(masks_mod.template_affine(), gm.shape)
    assert np.array_equal(same[0], gm) and np.array_equal(same[1], wm)  # identity grid: unchanged
    # the networks' 2.5 mm box: same tissue volume in mm3, WM deep inside, nothing at the box edge
    grid = ModelGrid()
    g25, w25 = masks_mod.priors_on_grid(grid.affine, grid.shape)
    assert g25.shape == w25.shape == grid.shape
    assert g25.sum() * 2.5**3 == pytest.approx(gm.sum() * 2.0**3, rel=0.02)
    assert w25.sum() * 2.5**3 == pytest.approx(wm.sum() * 2.0**3, rel=0.02)
    centre = tuple(s // 2 for s in grid.shape)
    assert w25[centre[0] - 8: centre[0] + 8].max() > 0.9 and w25[0].max() < 0.05


def test_phantom_metrics_match_known_truth():
    sigma = 2.0
    gm, wm = load_priors()
    image = phantom(noise=sigma)
    metrics, notes = compute_metrics(image, gm, wm, image, (2.0, 2.0, 2.0))
    assert notes == {}
    expected_snr = 100.0 / (sigma * RAYLEIGH_SD)
    assert metrics["snr"] == pytest.approx(expected_snr, rel=0.05)
    assert metrics["nd_wgm"] == pytest.approx(40.0 / 160.0, abs=0.01)
    assert metrics["aes"] > 0 and metrics["tenengrad"] > 0


def test_metrics_do_not_depend_on_a_global_intensity_scale():
    gm, wm = load_priors()
    image = phantom(noise=3.0)
    native = image[10:80, 5:100, 5:90]
    base, _ = compute_metrics(image, gm, wm, native, (1.0, 1.2, 2.0))
    scaled, _ = compute_metrics(image * 7.3, gm, wm, native * 7.3, (1.0, 1.2, 2.0))
    for name in METRIC_KEYS:
        assert scaled[name] == pytest.approx(base[name], rel=1e-4), name


def test_snr_falls_strictly_as_phantom_noise_rises():
    gm, wm = load_priors()
    values = [compute_metrics(phantom(noise=s), gm, wm, None, (2, 2, 2))[0]["snr"]
              for s in (1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_blur_lowers_aes_and_tenengrad():
    gm, wm = load_priors()
    sharp = phantom(noise=1.0)
    blurred = ndi.gaussian_filter(sharp, 1.0)
    m_sharp, _ = compute_metrics(sharp, gm, wm, sharp, (2, 2, 2))
    m_blur, _ = compute_metrics(blurred, gm, wm, blurred, (2, 2, 2))
    assert m_blur["aes"] < 0.9 * m_sharp["aes"]
    assert m_blur["tenengrad"] < 0.9 * m_sharp["tenengrad"]


def test_lower_grey_white_contrast_lowers_nd_wgm():
    gm, wm = load_priors()
    values = [compute_metrics(phantom(noise=2.0, gm=g), gm, wm, None, (2, 2, 2))[0]["nd_wgm"]
              for g in (50.0, 70.0, 90.0)]
    assert values[0] > values[1] > values[2]
    assert values[2] == pytest.approx(10 / 190, abs=0.01)


def test_sobel_gradient_matches_scipy():
    rng = np.random.default_rng(1)
    volume = rng.random((9, 11, 7)).astype(np.float32)
    zooms = (0.7, 1.0, 2.5)
    grad = sobel_gradient(volume, zooms)
    for axis in range(3):
        expected = ndi.sobel(volume.astype(np.float64), axis=axis) / (32 * zooms[axis])
        np.testing.assert_allclose(grad[axis], expected, rtol=1e-5, atol=1e-6)


def test_tenengrad_matches_the_stated_formula_across_chunks():
    rng = np.random.default_rng(2)
    volume = np.zeros((75, 30, 26), np.float32)  # > 2 chunks of 32 slices along axis 0
    volume[3:70, 4:27, 2:26] = rng.random((67, 23, 24)) * 100 + 50
    zooms = (1.0, 0.8, 1.5)
    fg = volume > 0.1 * np.percentile(volume, 99)
    g2 = sum((ndi.sobel(volume.astype(np.float64), axis=a) / (32 * zooms[a])) ** 2
             for a in range(3))
    expected = g2[fg].mean() / volume[fg].mean() ** 2
    assert tenengrad(volume, zooms) == pytest.approx(expected, rel=1e-5)


def test_fov_estimate_keeps_quantised_zeros_and_drops_the_outside():
    rng = np.random.default_rng(3)
    shape = (40, 44, 36)
    image = (rng.random(shape) < 0.75).astype(np.float32)  # quantised air: 25 % exact zeros
    i, j, _ = np.indices(shape)
    outside = (i + 0.5 * j) > 45  # oblique edge of the field of view
    image[outside] = 0
    fov = masks_mod.fov_mask(image)
    away = ~ndi.binary_dilation(outside, iterations=6)
    deep = np.zeros(shape, bool)
    deep[6:-6, 6:-6, 6:-6] = away[6:-6, 6:-6, 6:-6]
    assert not (fov & outside).any()
    assert (image[deep] == 0).sum() > 1000
    assert fov[deep & (image == 0)].mean() > 0.99  # the zeros inside stay in the FOV


def test_ghosting_band_in_the_air_is_excluded():
    gm, wm = load_priors()
    sigma = 2.0
    image = phantom(noise=sigma)
    ghost = np.roll(image, 40, axis=1) * 0.3  # a faint copy of the head shifted along y
    band = np.zeros_like(image, dtype=bool)
    band[:, :, 70:] = True
    image_ghost = np.where(band, image + ghost, image)
    masks = masks_mod.build_masks(image_ghost, gm, wm)
    assert masks.artefacts.sum() > 50
    truth = 100.0 / (sigma * RAYLEIGH_SD)
    assert snr(image_ghost, masks.wm, masks.air) == pytest.approx(truth, rel=0.15)
    naive = masks.air | masks.artefacts
    assert snr(image_ghost, masks.wm, naive) < 0.7 * truth


def test_snr_native_is_foreground_over_air_std_and_sees_noise_and_ghosts():
    clean = phantom(noise=0.0)
    sigma = 2.0
    image = rician(clean, sigma)
    head = clean > 0
    fg = image > 0.1 * np.percentile(image, 99)
    truth = image[fg].mean() / (sigma * RAYLEIGH_SD)  # the air of a Rician image: Rayleigh
    assert snr_native(image, (2, 2, 2)) == pytest.approx(truth, rel=0.1)
    assert snr_native(rician(clean, 2 * sigma), (2, 2, 2)) < 0.6 * snr_native(image, (2, 2, 2))
    ghost = np.where(head, 0, np.roll(clean, 40, axis=1) * 0.3)  # a faint shifted copy in the air
    assert snr_native(image + ghost, (2, 2, 2)) < 0.85 * snr_native(image, (2, 2, 2))
    assert snr_native(image * 7.5, (2, 2, 2)) == pytest.approx(snr_native(image, (2, 2, 2)), rel=1e-4)


def test_air_is_kept_in_a_very_noisy_scan_and_snr_keeps_falling():
    # white-matter SNR 25 to 10: single air voxels pass the foreground level (10 % of the 99th
    # percentile), then the whole Rayleigh floor does (as on a sub-mm grid); the head mask must
    # not grow a 10 mm ball around each of them until no air is left (it did: the severely noisy
    # scans of four other sites had no SNR at all)
    from bids_qc.metrics import head_and_air

    air_clean = head_and_air(phantom(noise=1.0), (2, 2, 2))[2].sum()
    values = []
    for sigma in (2.0, 4.0, 5.0, 6.0, 10.0):
        image = phantom(noise=sigma)
        assert head_and_air(image, (2, 2, 2))[2].sum() > 0.75 * air_clean
        values.append(snr_native(image, (2, 2, 2)))
    assert values == sorted(values, reverse=True)
    assert values[-1] < 0.25 * values[0]


def test_almost_zero_air_is_zero_filled_not_a_huge_snr():
    from bids_qc.metrics import MetricUndefined

    image = phantom(noise=0.0)
    air = image == 0
    image[air] = np.random.default_rng(1).random(air.sum()).astype(np.float32) * 1e-9
    with pytest.raises(MetricUndefined, match="zero"):
        snr_native(image, (2, 2, 2))


def test_snr_native_works_on_a_slab_and_needs_air():
    from bids_qc.metrics import MetricUndefined

    slab = rician(phantom(noise=0.0)[40:50], 2.0)  # 10 sagittal slices, like a partial-coverage scan
    assert math.isfinite(snr_native(slab, (2, 2, 2)))
    filled = np.random.default_rng(0).random((40, 40, 40)).astype(np.float32) + 1.0  # no air
    with pytest.raises(MetricUndefined, match="too little air"):
        snr_native(filled, (1, 1, 1))


# ----------------------------------------------------------------------------- bad inputs

def test_constant_images_give_nan_with_reasons():
    gm, wm = load_priors()
    metrics, notes = compute_metrics(np.full(gm.shape, 5.0, np.float32), gm, wm,
                                     np.full((30, 30, 30), 5.0, np.float32), (1, 1, 1))
    assert_all_keys(metrics, notes)
    assert set(notes) == METRIC_KEYS
    assert all("constant" in reason for reason in notes.values()), notes


def test_all_zero_images_give_nan_with_reasons():
    gm, wm = load_priors()
    metrics, notes = compute_metrics(np.zeros(gm.shape, np.float32), gm, wm,
                                     np.zeros((30, 30, 30), np.float32), (1, 1, 1))
    assert_all_keys(metrics, notes)
    assert set(notes) == METRIC_KEYS
    assert "empty" in notes["snr"] and "positive" in notes["tenengrad"]


def test_tiny_field_of_view_does_not_raise():
    gm, wm = load_priors()
    rng = np.random.default_rng(4)
    registered = np.zeros(gm.shape, np.float32)
    registered[45:51, 55:61, 50:56] = rng.random((6, 6, 6)) + 1
    metrics, notes = compute_metrics(registered, gm, wm, rng.random((4, 5, 6)), (1, 1, 1))
    assert_all_keys(metrics, notes)
    assert {"snr", "nd_wgm", "aes"} <= set(notes)
    assert math.isfinite(metrics["tenengrad"])
    metrics, notes = compute_metrics(registered, gm, wm, rng.random((2, 60, 60)), (1, 1, 1))
    assert "too small" in notes["tenengrad"]


@pytest.mark.parametrize("registered, reason", [
    (None, "no registered image"),
    (np.ones((50, 50, 50), np.float32), "shape"),
    (np.full((99, 117, 95), np.nan, np.float32), "NaN"),
])
def test_unusable_registered_images_only_void_their_metrics(registered, reason):
    gm, wm = load_priors()
    native = phantom(noise=2.0)
    metrics, notes = compute_metrics(registered, gm, wm, native, (2, 2, 2))
    assert_all_keys(metrics, notes)
    for name in ("snr", "nd_wgm", "aes"):
        assert reason in notes[name]
    assert math.isfinite(metrics["tenengrad"])


def test_bad_voxel_sizes_void_the_native_metrics_only():
    gm, wm = load_priors()
    image = phantom(noise=2.0)
    metrics, notes = compute_metrics(image, gm, wm, image, (0.0, 1.0, 1.0))
    assert set(notes) == {"tenengrad", "snr_native"}
    assert all("voxel sizes" in notes[m] for m in notes)


def test_zero_filled_background_gives_nan_snr_with_reason():
    gm, wm = load_priors()
    clean = phantom(noise=0.0)
    head = ndi.binary_dilation(clean > 0, iterations=2)
    image = np.where(head, rician(clean, 2.0), 0).astype(np.float32)  # scanner zeroed the air
    metrics, notes = compute_metrics(image, gm, wm, image, (2, 2, 2),
                                     fov=np.ones(image.shape, bool))
    assert math.isnan(metrics["snr"])
    assert notes["snr"] == "air std is zero (quantised or zero-filled background)"
    assert math.isfinite(metrics["nd_wgm"]) and math.isfinite(metrics["aes"])


def test_individual_functions_raise_metric_undefined_not_crash():
    from bids_qc.metrics import MetricUndefined

    empty = np.zeros((20, 20, 20), bool)
    image = np.ones((20, 20, 20), np.float32)
    for call in (lambda: snr(image, empty, empty), lambda: nd_wgm(image, empty, empty),
                 lambda: aes(image, empty, (2, 2, 2)), lambda: tenengrad(np.zeros((5, 5, 5)))):
        with pytest.raises(MetricUndefined):
            call()


# ----------------------------------------------------------------------------- IXI calibration

class Registered:
    """One IXI scan affinely registered to the 2 mm template (centre of mass + Mattes MI affine,
    no bias correction); ``resample`` maps any image on the scan's grid with the same transform.
    Quick and rough (the brain-only template pulls the brain onto the whole head): enough for
    curves measured on one alignment; benchmarks/bench_metrics.py registers more carefully."""

    def __init__(self, path: Path):
        import SimpleITK as sitk

        img = nib.as_closest_canonical(nib.load(str(path)))
        self.native = np.asarray(img.dataobj, dtype=np.float32)
        self.affine, self.zooms = img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])
        tpl = nib.load(str(TEMPLATE_T1W))
        self.fixed = to_sitk(np.asarray(tpl.dataobj, np.float32), tpl.affine)
        moving = to_sitk(self.native, self.affine)
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(32)
        reg.SetMetricSamplingStrategy(reg.REGULAR)  # deterministic, unlike RANDOM
        reg.SetMetricSamplingPercentage(0.15, 1)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 60)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2])
        reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.SetInitialTransform(sitk.CenteredTransformInitializer(
            self.fixed, moving, sitk.AffineTransform(3),
            sitk.CenteredTransformInitializerFilter.MOMENTS), inPlace=False)
        reg.SetNumberOfThreads(1)
        self.transform = reg.Execute(self.fixed, moving)
        self.fov = self.resample(np.ones_like(self.native)) > 0.999
        clean = self.resample(self.native)
        self.reference = 255.0 / float(np.percentile(clean[clean > 0], 99.5))  # simulation unit

    def resample(self, volume: np.ndarray) -> np.ndarray:
        import SimpleITK as sitk

        out = sitk.Resample(to_sitk(volume, self.affine), self.fixed, self.transform,
                            sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return from_sitk(out)

    def metrics(self, volume: np.ndarray, fov: bool = True) -> tuple[dict, dict]:
        gm, wm = load_priors()
        return compute_metrics(self.resample(volume), gm, wm, volume, self.zooms,
                               fov=self.fov if fov else None)


@pytest.fixture(scope="module")
def ixi():
    if not IXI_SCAN.is_file():
        pytest.skip(f"shared IXI data not found at {IXI_SCAN} (set BIDS_QC_DATA)")
    return Registered(IXI_SCAN)


def test_ixi_clean_scan_values_are_plausible(ixi):
    for fov in (True, False):
        metrics, notes = ixi.metrics(ixi.native, fov=fov)
        assert notes == {}, notes
        assert 20 < metrics["snr"] < 1000  # 8-bit quantised air: high, not meaningful
        assert 0.10 < metrics["nd_wgm"] < 0.25  # published clinical mean for grade 0: 0.16
        assert metrics["aes"] > 0 and metrics["tenengrad"] > 0


def test_ixi_snr_falls_strictly_with_simulated_noise(ixi):
    sigmas = (0.0, 5.0, 10.0, 20.0)  # reference scale (99.5th percentile = 255), Rician
    values = [ixi.metrics(rician(ixi.native, s / ixi.reference, seed=1) if s else ixi.native)[0]
              ["snr"] for s in sigmas]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_ixi_nd_wgm_falls_with_stronger_negative_gamma(ixi):
    top = float(ixi.native.max())
    values = []
    for log_gamma in (0.0, -0.1, -0.25, -0.45):
        volume = (np.clip(ixi.native, 0, None) / top) ** np.exp(log_gamma) * top
        values.append(ixi.metrics(volume.astype(np.float32))[0]["nd_wgm"])
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_ixi_motion_lowers_aes_and_tenengrad(ixi):
    import torch
    import torchio as tio

    torch.set_num_threads(1)
    clean, _ = ixi.metrics(ixi.native)
    motion = tio.Motion(degrees=np.array([[3.0, -4.0, 2.0], [-2.0, 3.0, -3.0], [4.0, 2.0, -2.0]]),
                        translation=np.array([[3.0, -2.0, 2.0], [-3.0, 2.0, 3.0], [2.0, 3.0, -2.0]]),
                        times=np.array([0.3, 0.5, 0.7]), image_interpolation="linear")
    image = tio.ScalarImage(tensor=torch.from_numpy(ixi.native[None].copy()), affine=ixi.affine)
    moved = np.abs(motion(image).data[0].numpy()).astype(np.float32)
    metrics, notes = ixi.metrics(moved)
    assert notes == {}
    assert metrics["aes"] < clean["aes"]
    assert metrics["tenengrad"] < clean["tenengrad"]
