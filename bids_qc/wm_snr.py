"""White-matter SNR of a scan as its noise grade is defined (:mod:`bids_qc.scanner_space`).

``SNR = median white matter / sigma``, both measured on the scan as the app works on it before
bias correction (voxels of at least 1.5 mm, :func:`bids_qc.images.bound_resolution`): the white
matter is the template's WM prior > 0.9 pulled onto that grid through the scan's registration,
sigma is the Rician noise level of the air (std of the voxels more than 10 mm from the head /
the Rayleigh factor, :func:`bids_qc.metrics.head_and_air`). The published clinical calibration
reads ~74 clean, ~38-44 moderate noise, ~25-27 severe; :data:`NOISE_SNR_LIMITS` turns it into a
grade. A ratio of intensities, so it does not depend on a scanner's units, and measured at a
fixed working resolution, so a 0.5 mm scan is not called noisy for its small voxels.

Unlike :func:`bids_qc.metrics.snr_native` (whole head over the air's std), it reads the tissue a
reader looks at and the noise level rather than the air's spread.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from bids_qc.grading import grade_from
from bids_qc.images import from_sitk, load_template, to_sitk
from bids_qc.metrics import MetricUndefined, air_std, head_and_air

NOISE_SNR_LIMITS = (52.0, 27.5)  # below the first: grade 1; below the second: grade 2
RAYLEIGH_STD = np.sqrt(2 - np.pi / 2)  # std of pure Rician (Rayleigh) air noise / sigma
WM_PRIOR_LEVEL = 0.9
MIN_WM_VOXELS = 200


def air_sigma(data: np.ndarray, zooms) -> float:
    """Rician sigma of the air around the head; 0 when the air is zero-filled or too small."""
    sample, fg, air = head_and_air(data, zooms)
    try:
        return air_std(sample, fg, air) / RAYLEIGH_STD
    except MetricUndefined:
        return 0.0


def wm_snr(working: sitk.Image, template_to_subject: sitk.Transform) -> float:
    """The white-matter SNR of ``working`` (the scan at the working resolution, before N4);
    ``template_to_subject``: the registration's transform. Raises :class:`MetricUndefined`."""
    prior, prior_affine = load_template("label-WM_probseg")
    moved = sitk.Resample(to_sitk(prior, prior_affine), working, template_to_subject.GetInverse(),
                          sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    wm = from_sitk(moved) > WM_PRIOR_LEVEL
    if np.count_nonzero(wm) < MIN_WM_VOXELS:
        raise MetricUndefined("white matter mostly outside the field of view")
    data = from_sitk(working)
    sigma = air_sigma(data, working.GetSpacing())
    if sigma <= 0:
        raise MetricUndefined("no noise in the air (zero-filled or too little air around the head)")
    return float(np.median(data[wm])) / sigma


def noise_grade(snr: float) -> int | None:
    """0, 1 or 2 by :data:`NOISE_SNR_LIMITS`; None for a missing SNR."""
    if snr is None or not np.isfinite(snr):
        return None
    return grade_from(snr, NOISE_SNR_LIMITS, lower_is_worse=True)
