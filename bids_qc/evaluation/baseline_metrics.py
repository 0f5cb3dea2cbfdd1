"""Each artefact alone vs clean: a detector's AUC beside the AUC of the metric a user would
otherwise screen with, on the same model-grid images (``benchmarks/bench_heldout.py``)."""
from __future__ import annotations

import numpy as np

from bids_qc.masks import prior_masks, priors_on_grid
from bids_qc.metrics import nd_wgm, tenengrad
from bids_qc.record import ARTEFACTS
from bids_qc.simulation import SEVERITY_NAMES
from bids_qc.training.metrics import auc


class BaselineMetrics:
    """The metric a user would screen each artefact with, on an image of the model grid
    (reference scale), oriented so that higher = worse."""

    NAMES = {"motion": "Tenengrad", "noise": "WM SNR", "contrast": "ND-WGM"}

    def __init__(self, grid):
        cores = prior_masks(*priors_on_grid(grid.affine, grid.shape), grid.affine)
        self.gm, self.wm, self.zooms = cores.gm_core, cores.wm_core, (grid.spacing,) * 3

    def __call__(self, volume: np.ndarray) -> dict:
        wm = volume[self.wm].astype(np.float64)
        return {"motion": -tenengrad(volume, self.zooms), "noise": float(-wm.mean() / wm.std(ddof=1)),
                "contrast": -nd_wgm(volume, self.gm, self.wm)}


def artefact_vs_clean(rows: list) -> dict:
    """AUC of each artefact's moderate and severe detectors and of its baseline metric, that
    artefact alone (grade 1 or 2) against the clean images; ``rows``: (artefact or None for
    clean, grade, probabilities, baseline scores)."""
    print("\nEach artefact alone vs clean, same images (AUC; metrics oriented so that higher = worse):")
    print(f"{'images':<28}{'detector':<19}{'AUC':>6}  {'metric':<11}{'AUC':>6}{'n':>5}")
    out = {}
    for artefact in ARTEFACTS:
        out[artefact] = {"metric": BaselineMetrics.NAMES[artefact]}
        for grade, severity in SEVERITY_NAMES.items():
            sel = [r for r in rows if r[0] is None or (r[0] == artefact and r[1] == grade)]
            y = np.array([int(r[0] is not None) for r in sel])
            det = f"{artefact}_{severity}"
            a_det = auc(y, np.array([r[2][det] for r in sel]))
            a_metric = auc(y, np.array([r[3][artefact] for r in sel]))
            out[artefact][f"{severity} vs clean"] = {"detector": det, "detector_auc": a_det,
                                                     "metric_auc": a_metric, "n": len(sel)}
            print(f"{artefact + ' ' + severity + ' vs clean':<28}{det:<19}{a_det:>6.3f}  "
                  f"{BaselineMetrics.NAMES[artefact]:<11}{a_metric:>6.3f}{len(sel):>5}")
    return out
