"""The noise level of the air that grades noise (bids_qc.wm_snr): Rician sigma read from the air's
median absolute deviation (MAD), which ghosts and specks in part of the air move less than its
standard deviation, and which is 0 on a mostly zero-filled air however many ghosts it holds."""
import numpy as np
import pytest
from test_metrics import phantom, rician

from bids_qc.wm_snr import air_sigmas

ZOOMS = (2, 2, 2)
SIGMA = 2.0


def ghosted(image: np.ndarray, clean: np.ndarray, strength: float) -> np.ndarray:
    """``image`` with faint copies of the head, shifted 80 mm either way along y, added where the
    head is not (the ghosts of motion: signal in part of the air; brighter ghosts are left out of
    the air by :func:`bids_qc.metrics.head_and_air` itself)."""
    copies = np.roll(clean, 40, axis=1) + np.roll(clean, -40, axis=1)
    return image + np.where(clean > 0, 0, copies * strength)


def test_mad_reads_the_rician_sigma_of_a_clean_air():
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


def test_ghosts_above_the_noise_move_the_mad_less_than_the_std():
    clean = phantom(noise=0.0)
    sigmas = air_sigmas(ghosted(rician(clean, SIGMA), clean, 0.05), ZOOMS)
    assert sigmas["std"] > 1.15 * SIGMA  # the ghosts read as noise
    assert sigmas["mad"] == pytest.approx(SIGMA, rel=0.12)
    assert sigmas["mad"] < sigmas["std"]


def test_the_offset_of_a_many_coil_air_is_not_read_as_noise():
    """A sum-of-squares air has a level well above 0 and a narrow spread (the United Imaging
    scan: 5-95 % of its air between 12 and 24): the MAD reads the spread, as the std does, not
    the level."""
    clean = phantom(noise=0.0)
    rng = np.random.default_rng(1)
    image = clean + np.where(clean > 0, 0, 15.0 + rng.normal(0, SIGMA, clean.shape)).astype(np.float32)
    sigmas = air_sigmas(image, ZOOMS)
    assert sigmas["mad"] == pytest.approx(sigmas["std"], rel=0.25)
    assert sigmas["mad"] < 5.0


def test_more_noise_still_reads_as_more_noise_under_ghosts():
    clean = phantom(noise=0.0)
    readings = [air_sigmas(ghosted(rician(clean, s, seed=3), clean, 0.04), ZOOMS)["mad"]
                for s in (1.0, 2.0, 4.0)]
    assert readings == sorted(readings)
    # ghosts as faint as the noise itself lift the MAD a little (~10 %), never the order
    assert readings[2] == pytest.approx(4.0, rel=0.15)
