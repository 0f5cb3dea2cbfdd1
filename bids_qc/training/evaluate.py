"""Held-out evaluation of a detector set: per-detector and tier-decision balanced accuracy."""
from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader

from bids_qc.grading import LABEL_SCHEMES, binary_labels, grades_of, tiers_of
from bids_qc.record import ARTEFACTS
from bids_qc.training.loop import evaluate
from bids_qc.training.metrics import auc, binary_scores


def tier_scores(true_tiers: np.ndarray, pred_tiers: np.ndarray) -> dict:
    """'tier_12_vs_3': reject decision on all images; 'tier_1_vs_2': on images truly tier 1 or 2,
    positive = tier 2, predicted positive = predicted tier >= 2."""
    out = {"tier_12_vs_3": binary_scores(true_tiers == 3, pred_tiers == 3)}
    keep = true_tiers <= 2
    out["tier_1_vs_2"] = binary_scores(true_tiers[keep] == 2, pred_tiers[keep] >= 2)
    return out


def evaluate_detectors(nets: dict, dataset, batch_size: int = 6, thresholds: dict | None = None,
                       schemes=LABEL_SCHEMES) -> dict:
    """Scores of ``nets`` (all six detectors) on a simulated ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    per_det, probs, grades = evaluate(nets, loader, schemes, thresholds)
    for det in nets:
        col = ARTEFACTS.index(det.split("_")[0])
        labels = binary_labels(det, grades[:, col].tolist(), schemes)
        per_det[det]["auc"] = auc(labels[labels >= 0], probs[det][labels >= 0])
    result = {"n_images": int(len(grades)), "detectors": per_det}
    if set(nets) >= {f"{a}_{s}" for a in ARTEFACTS for s in ("moderate", "severe")}:
        result["tiers"] = tier_scores(tiers_of(grades), tiers_of(grades_of(probs, thresholds)))
    return result
