"""From detector probabilities to grades (0 none, 1 moderate, 2 severe) and a tier.

Label schemes (what each detector was trained to separate), by default:
- ``<artefact>_moderate``: grade 0 (negative) vs grade 1 (positive); grade 2 images are not shown.
- ``<artefact>_severe``: grades 0+1 (negative) vs grade 2 (positive).
The published noise-severe detector used 0 vs 1+2; ``LABEL_SCHEMES_PAPER`` keeps that variant,
but then no detector separates noise grade 1 from 2, so the default is the coherent scheme above.

Grade = 2 if the severe detector fires, else 1 if the moderate detector fires, else 0.
Tier = 1 if every grade is 0, 3 if any grade is 2, else 2.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bids_qc.record import ARTEFACTS

LABEL_SCHEMES = {
    f"{a}_{s}": ({"negative": [0], "positive": [1]} if s == "moderate"
                 else {"negative": [0, 1], "positive": [2]})
    for a in ARTEFACTS for s in ("moderate", "severe")
}
LABEL_SCHEMES_PAPER = {**LABEL_SCHEMES, "noise_severe": {"negative": [0], "positive": [1, 2]}}


def detector_label(detector: str, grade: int, schemes: dict = LABEL_SCHEMES) -> int | None:
    """Binary label of an image of ``grade`` (for the detector's artefact), or None if excluded."""
    scheme = schemes[detector]
    if grade in scheme["positive"]:
        return 1
    if grade in scheme["negative"]:
        return 0
    return None


def binary_labels(detector: str, grades, schemes: dict = LABEL_SCHEMES) -> np.ndarray:
    """Binary labels (int array) of a sequence of grades for ``detector``: 1 positive,
    0 negative, -1 where the detector does not see that grade or the grade is missing (NaN/None)."""
    out = []
    for g in grades:
        missing = g is None or (isinstance(g, float) and np.isnan(g)) or g is pd.NA
        label = None if missing else detector_label(detector, int(g), schemes)
        out.append(-1 if label is None else label)
    return np.array(out, dtype=int)


def grades_from_probabilities(probs: dict, thresholds: dict | None = None) -> dict:
    """``{artefact: grade}`` from ``{detector: probability}``."""
    row = grades_of({d: [p] for d, p in probs.items()}, thresholds)[0]
    return {a: int(g) for a, g in zip(ARTEFACTS, row)}


def grade_from(value: float, limits, lower_is_worse: bool) -> int:
    """0, 1 or 2 from a measured value and its two limits ``(grade 1, grade 2)``, e.g. an SNR
    (``lower_is_worse``: below the first limit grade 1, below the second grade 2) or a contrast
    drop (at or above the first grade 1, at or above the second grade 2)."""
    first, second = limits
    if lower_is_worse:
        return 2 if value < second else 1 if value < first else 0
    return 2 if value >= second else 1 if value >= first else 0


def tier_from_grades(grades: dict) -> int:
    return int(tiers_of([[int(g) for g in grades.values()]])[0])


def grades_of(probs: dict, thresholds: dict | None = None) -> np.ndarray:
    """(n, 3) grades, columns in ``ARTEFACTS`` order, from ``{detector: probability array}``
    (default thresholds 0.5)."""
    thresholds = thresholds or {}
    cols = []
    for a in ARTEFACTS:
        severe = np.asarray(probs[f"{a}_severe"]) >= thresholds.get(f"{a}_severe", 0.5)
        moderate = np.asarray(probs[f"{a}_moderate"]) >= thresholds.get(f"{a}_moderate", 0.5)
        cols.append(np.where(severe, 2, np.where(moderate, 1, 0)))
    return np.stack(cols, 1)


def tiers_of(grades) -> np.ndarray:
    """Tier per row of an (n, k) grade array."""
    worst = np.asarray(grades).max(1)
    return np.where(worst >= 2, 3, np.where(worst == 1, 2, 1))
