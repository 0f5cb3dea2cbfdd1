"""The noise level of the air that grades noise (bids_qc.wm_snr): the Rician sigma from the air's
std, except where the air is mostly one value (zero-filled): its spread is specks and motion
ghosts, not noise, and no SNR is read."""
import numpy as np
import pytest
from test_metrics import phantom, rician

from bids_qc.wm_snr import air_sigmas, graded_snr

ZOOMS = (2, 2, 2)
SIGMA = 2.0


def ghosted(image: np.ndarray, clean: np.ndarray, strength: float) -> np.ndarray:
    """``image`` with faint copies of the head, shifted 80 mm either way along y, added where the
    head is not (the ghosts of motion: signal in part of the air; brighter ghosts are left out of
    the air by :func:`bids_qc.metrics.head_and_air` itself)."""
    copies = np.roll(clean, 40, axis=1) + np.roll(clean, -40, axis=1)
    return image + np.where(clean > 0, 0, copies * strength)


def test_both_readings_give_the_rician_sigma_of_a_noisy_air():
    sigmas = air_sigmas(rician(phantom(noise=0.0), SIGMA), ZOOMS)
    assert sigmas["mad"] == pytest.approx(SIGMA, rel=0.05)
    assert sigmas["std"] == pytest.approx(SIGMA, rel=0.1)


def test_ghosts_in_a_zero_filled_air_are_no_noise_reading():
    """IXI's case: an 8-bit air mostly exactly 0; motion ghosts (and specks) in part of it made
    the std reading call a motion-only scan noisy."""
    clean = phantom(noise=0.0)
    image = ghosted(clean, clean, 0.05)
    air = clean == 0
    image[air & (np.random.default_rng(0).random(clean.shape) < 0.03)] += 20.0  # sparse specks
    sigmas = air_sigmas(image, ZOOMS)
    assert sigmas["std"] > 1.0 and sigmas["mad"] == 0.0
    assert graded_snr({"std": 100.0 / sigmas["std"], "mad": None}) is None


def test_noise_added_to_that_air_is_read_again():
    clean = phantom(noise=0.0)
    image = rician(ghosted(clean, clean, 0.05), SIGMA)
    sigmas = air_sigmas(image, ZOOMS)
    assert sigmas["mad"] > 0.5 * SIGMA
    snrs = {"std": 100.0 / sigmas["std"], "mad": 100.0 / sigmas["mad"]}
    assert graded_snr(snrs) == snrs["std"]
