"""A site's own threshold for the slab motion detector, from its ratings (group level).

The shipped threshold was set on IXI; still scans of other sites score higher (see the model
card), so the verdict needs the site's threshold while the score's ranking carries over. With
``--annotations``, the group level takes the rated scans' ``slab_motion_score`` and motion grades
(grade >= 1 = motion), picks the Youden threshold, estimates its balanced accuracy out of fold
(K folds by subject: threshold from the other folds), puts it beside the shipped threshold's,
and adds the column ``slab_motion_site`` (score >= site threshold) to the group table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bids_qc.training.calibration import youden_threshold
from bids_qc.training.metrics import binary_scores
from bids_qc.training.splits import kfold_by_subject

SCORE_BOUNDS = (1e-6, 1 - 1e-6)  # slab scores are not centred on 0.5: search the whole range


def site_threshold(scores, labels, subjects, shipped: float, k: int = 5, seed: int = 0) -> dict:
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    out = {"shipped_threshold": shipped, "n_rated": int(labels.size), "n_motion": n_pos,
           "n_still": n_neg}
    if n_pos < 2 or n_neg < 2:
        return {**out, "status": "kept the shipped threshold (fewer than 2 rated scans per class)"}
    threshold = youden_threshold(labels, scores, bounds=SCORE_BOUNDS)
    subjects = [str(s) for s in subjects]
    oof = np.zeros(labels.size, bool)
    for train, val in kfold_by_subject(subjects, max(2, min(k, len(set(subjects)))), seed):
        fit = np.isin(subjects, train)
        held = np.isin(subjects, val)
        oof[held] = scores[held] >= youden_threshold(labels[fit], scores[fit], bounds=SCORE_BOUNDS)
    return {**out, "status": "calibrated", "threshold": threshold,
            "balanced_accuracy": {
                "shipped_threshold": binary_scores(labels, scores >= shipped)["balanced_accuracy"],
                "site_threshold_cross_validated": binary_scores(labels, oof)["balanced_accuracy"]}}


def apply_site_threshold(table: pd.DataFrame, ratings: pd.DataFrame, shipped: float) -> dict:
    """Calibrate on the rated scans of ``table`` that have a slab score; add ``slab_motion_site``."""
    scored = table[["bids_name", "subject", "slab_motion_score"]].dropna(subset=["slab_motion_score"])
    rated = ratings.dropna(subset=["motion"]).merge(scored, on="bids_name")
    result = site_threshold(rated["slab_motion_score"], (rated["motion"] >= 1).astype(int),
                            rated["subject"], shipped)
    if "threshold" in result:
        score = pd.to_numeric(table["slab_motion_score"], errors="coerce")
        table["slab_motion_site"] = (score >= result["threshold"]).astype("boolean").mask(score.isna())
    return result
