"""A model bundle's probabilities for one model-grid volume, as {detector: p}."""
from __future__ import annotations

import numpy as np
import torch

from bids_qc.record import DETECTORS


def predict(bundle, volume: np.ndarray) -> dict:
    mean, _ = bundle.predict(torch.from_numpy(volume)[None, None])
    return {d: float(mean[d][0]) for d in DETECTORS}
