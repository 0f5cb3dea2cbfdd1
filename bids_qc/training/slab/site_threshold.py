"""A site's own threshold for the slab motion detector, from its ratings (group level).

The shipped threshold was set on IXI; still scans of other sites can score higher (see the
model card), so a site may need its own threshold while the score's ranking carries over. With
``--annotations``, the group level takes the rated scans' ``slab_motion_score`` and motion grades
(grade >= 1 = motion) and picks the Youden threshold (the candidate). It is *adopted* only when it
is better than the shipped threshold on the ratings out of sample: the candidate's balanced
accuracy is estimated out of fold (K folds by subject: each fold is judged at the threshold
picked on the other folds) and must be strictly above the shipped threshold's balanced accuracy
on the same ratings (the shipped threshold was not fitted to them, so no folds are needed).
Otherwise the shipped threshold is kept. Both figures and the choice are returned; only an
adopted threshold adds the column ``slab_motion_site`` (score >= site threshold) to the table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bids_qc.training.calibration import youden_threshold
from bids_qc.training.metrics import binary_scores
from bids_qc.training.splits import kfold_by_subject

SCORE_BOUNDS = (1e-6, 1 - 1e-6)  # slab scores are not centred on 0.5: search the whole range


def _out_of_fold(scores, labels, subjects, k: int, seed: int) -> np.ndarray:
    """Verdicts (score >= threshold) of each scan at the threshold picked without its subject."""
    oof = np.zeros(labels.size, bool)
    for train, val in kfold_by_subject(subjects, max(2, min(k, len(set(subjects)))), seed):
        fit, held = np.isin(subjects, train), np.isin(subjects, val)
        oof[held] = scores[held] >= youden_threshold(labels[fit], scores[fit], bounds=SCORE_BOUNDS)
    return oof


def site_threshold(scores, labels, subjects, shipped: float, k: int = 5, seed: int = 0) -> dict:
    """The choice between the shipped threshold and the site's (see the module docstring).

    Returns ``shipped_threshold, n_rated, n_motion, n_still, status, adopted`` and ``threshold``
    (the one in use); with enough ratings also ``site_threshold`` (the candidate) and
    ``balanced_accuracy: {shipped_threshold, site_threshold_cross_validated}``.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    out = {"shipped_threshold": shipped, "n_rated": int(labels.size), "n_motion": n_pos,
           "n_still": n_neg, "adopted": False, "threshold": shipped}
    if n_pos < 2 or n_neg < 2:
        return {**out, "status": "kept the shipped threshold (fewer than 2 rated scans per class)"}
    candidate = youden_threshold(labels, scores, bounds=SCORE_BOUNDS)
    oof = _out_of_fold(scores, labels, [str(s) for s in subjects], k, seed)
    ba_shipped = binary_scores(labels, scores >= shipped)["balanced_accuracy"]
    ba_site = binary_scores(labels, oof)["balanced_accuracy"]
    adopted = bool(ba_site > ba_shipped)
    figures = f"balanced accuracy {ba_site:.3f} cross-validated vs {ba_shipped:.3f} shipped"
    status = (f"adopted the site threshold (better than the shipped one: {figures})" if adopted
              else f"kept the shipped threshold (the site threshold is not better: {figures})")
    return {**out, "status": status, "adopted": adopted,
            "threshold": candidate if adopted else shipped, "site_threshold": candidate,
            "balanced_accuracy": {"shipped_threshold": ba_shipped,
                                  "site_threshold_cross_validated": ba_site}}


def apply_site_threshold(table: pd.DataFrame, ratings: pd.DataFrame, shipped: float) -> dict:
    """Choose on the rated scans of ``table`` that have a slab score; an adopted threshold adds
    ``slab_motion_site`` to ``table``."""
    scored = table[["bids_name", "subject", "slab_motion_score"]].dropna(subset=["slab_motion_score"])
    rated = ratings.dropna(subset=["motion"]).merge(scored, on="bids_name")
    result = site_threshold(rated["slab_motion_score"], (rated["motion"] >= 1).astype(int),
                            rated["subject"], shipped)
    if result["adopted"]:
        score = pd.to_numeric(table["slab_motion_score"], errors="coerce")
        table["slab_motion_site"] = (score >= result["threshold"]).astype("boolean").mask(score.isna())
    return result
