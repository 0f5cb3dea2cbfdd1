"""Label-preserving intensity augmentation of training draws: the length of the bright tail.

Min-max normalisation divides every image by its brightest voxel. In the reference scale of the
preprocessed volume (99.5th percentile of the box = 255, :mod:`bids_qc.preprocessing`) the IXI
maxima (vessels, fat, eyes) lie between about 390 and 610, so after normalisation one subject's
grey and white matter are up to ~40 % brighter than another's -- as much as a moderate gamma
brightens them. A contrast detector trained without this variation reads a short tail as "low
contrast": compressing or stretching only the tail of one clean held-out scan moved the shipped
v1.4 moderate-contrast probability from 0.02 to 1.00.

:func:`stretch_bright_tail` scales the intensities above the reference level by a factor, which
changes the maximum and therefore the normalised tissue brightness, while the tissue intensities
themselves, and so their ratios (what a gamma changes), are left as they were.

With the clipped min-max normalisation (clip at the 99.5th percentile of the box) the tail no
longer matters, but the clip level itself varies between subjects (how much scalp fat and vessel
the box holds): the IXI white matter lies at 0.86 +- 0.022 of it, and a moderate gamma brightens
it by about 0.014. The shipped v2.3 moderate-contrast detector called 16 of the 20 clean held-out
scans positive once their clip level was lowered by 5 % (2 as they are, none at +5 %). A clip-level factor
(``SimulatedSet(clip_range=...)``, ``bids-qc-train --clip-augment``) varies it in training, a
linear rescaling of the tissue that leaves its intensity ratios, and so the labels, as they were.
"""
from __future__ import annotations

import numpy as np

from bids_qc.preprocessing import REFERENCE_VALUE


def stretch_bright_tail(volume: np.ndarray, factor: float,
                        reference: float = REFERENCE_VALUE) -> np.ndarray:
    """``volume`` with every intensity above ``reference`` moved to ``reference + factor * excess``."""
    if factor <= 0:
        raise ValueError(f"tail factor must be positive, got {factor}")
    out = np.array(volume, dtype=np.float32, copy=True)
    above = out > reference
    out[above] = reference + (out[above] - reference) * factor
    return out


def draw_log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Log-uniform factor in [low, high] (a factor and its inverse are equally likely)."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))
