"""How many clean scans each detector calls positive under a label-preserving change (bright
tail, clip level), and how far its probability moves (``benchmarks/bench_heldout.py``)."""
from __future__ import annotations

import numpy as np

from bids_qc.record import DETECTORS
from bids_qc.verdict import positive

TAIL_FACTORS = (0.5, 1.0, 2.0)
CLIP_FACTORS = (0.95, 0.97, 1.0, 1.03, 1.05)


def invariance(rows: list, thresholds: dict, factors, title: str) -> dict:
    """Clean scans called positive at each factor of a label-preserving change, and the mean
    |p(first factor) - p(last factor)|. ``rows``: per scan, the probabilities at each factor."""
    n = len(rows)
    print("\n" + title.format(n=n, factors=factors))
    print(f"{'detector':<20}" + "".join(f"{'positive x' + format(f, 'g'):>16}" for f in factors)
          + f"{'mean |dp|':>11}")
    out = {"factors": list(factors), "n_scans": n, "detectors": {}}
    for det in DETECTORS:
        p = np.array([[row[det] for row in subject] for subject in rows])  # (n, factors)
        fired = positive(p, thresholds[det]).sum(0).tolist()
        shift = float(np.abs(p[:, 0] - p[:, -1]).mean())
        out["detectors"][det] = {"positive": fired, "mean_abs_shift": shift}
        print(f"{det:<20}" + "".join(f"{f'{k}/{n}':>16}" for k in fired) + f"{shift:>11.3f}")
    return out
