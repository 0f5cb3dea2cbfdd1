"""The noise sigma of the white-matter SNR read in the outer corners of k-space
(bids_qc.wm_snr.kspace_sigma): right on plain Rician noise, unmoved by ghosts that inflate the
air's spread, and not used when a zero-filling reconstruction left the corners empty."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_qc.metrics import air_std, head_and_air
from bids_qc.wm_snr import (
    KSPACE_MIN_SHARE,
    RAYLEIGH_STD,
    kspace_sigma,
    noise_sigma,
    working_noise_gain,
)

ZOOMS = (2.0, 2.0, 2.0)


def _head(shape=(96, 112, 96)):
    """A smooth ellipsoidal 'head' (level ~100, darker core) in a zero background."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (0.3 * n)) ** 2 for g, c, n in zip(grid, centre, shape)))
    head = np.where(r < 1, 100 - 30 * np.exp(-((r / 0.5) ** 2)), 0).astype(np.float32)
    return ndi.gaussian_filter(head, 1.5)


def _rician(data, sigma, seed):
    rng = np.random.default_rng(seed)
    return np.hypot(data + rng.normal(0, sigma, data.shape),
                    rng.normal(0, sigma, data.shape)).astype(np.float32)


def _air_sigma(data):
    sample, fg, air = head_and_air(data, ZOOMS)
    return air_std(sample, fg, air) / RAYLEIGH_STD


@pytest.mark.parametrize("sigma", [1.0, 2.5, 4.0])
def test_plain_rician_noise_is_read_right(sigma):
    noisy = _rician(_head(), sigma, seed=int(sigma * 10))
    assert kspace_sigma(noisy, ZOOMS) == pytest.approx(sigma, rel=0.1)
    assert _air_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_motion_ghosts_inflate_the_air_but_not_the_kspace_corners():
    """Severe motion (5-8 mm, k-space blocks of several head positions: the independent
    benchmark's simulator), then Rician noise of sigma 1."""
    from bids_qc.evaluation.independent_artefacts import motion

    moved, _ = motion(_head(), ZOOMS, 2, np.random.default_rng(0))
    noisy = _rician(moved, 1.0, seed=1)
    air, kspace = _air_sigma(noisy), kspace_sigma(noisy, ZOOMS)
    assert air > 1.4  # the air's spread reads the ghosts as noise
    assert kspace == pytest.approx(1.0, rel=0.12)
    assert noise_sigma(air, kspace) == kspace


def test_zero_filled_corners_are_not_used():
    """Interpolation by zero-filling k-space (x2 per axis) leaves the corners without noise."""
    noisy = _rician(_head((48, 56, 48)), 2.0, seed=2)
    spectrum = np.fft.fftshift(np.fft.fftn(noisy))
    padded = np.pad(spectrum, [(n // 2, n // 2) for n in noisy.shape])
    fine = np.abs(np.fft.ifftn(np.fft.ifftshift(padded))).astype(np.float32) * 8
    zooms = (1.0, 1.0, 1.0)
    sample, fg, air = head_and_air(fine, zooms)
    air_sigma = air_std(sample, fg, air) / RAYLEIGH_STD
    kspace = kspace_sigma(fine, zooms)
    assert kspace < KSPACE_MIN_SHARE * air_sigma
    assert noise_sigma(air_sigma, kspace) == air_sigma
    assert noise_sigma(3.0, None) == 3.0 and noise_sigma(3.0, float("nan")) == 3.0


def test_working_gain_is_one_at_the_working_resolution_and_below_it_for_fine_voxels():
    assert working_noise_gain((2.0, 2.0, 2.0), (96, 96, 96)) == pytest.approx(1.0, abs=0.05)
    assert working_noise_gain((0.5, 0.5, 1.0), (300, 300, 160)) < 0.5
