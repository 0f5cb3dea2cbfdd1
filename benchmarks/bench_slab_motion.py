#!/usr/bin/env python
"""Held-out and real-motion evaluation of the shipped slab motion detector, in one command.

    python benchmarks/bench_slab_motion.py [--model-dir DIR (default: the shipped slab model)] [--data ../shared/data]

1. Simulated motion on the model's held-out IXI subjects (listed in its manifest, never trained
   on), re-simulated here from the raw scans with a seed the training never used: AUC still vs
   moved per amplitude bin for the detector, Tenengrad and native SNR on the same images, and the
   detector's sensitivity/specificity at its threshold.
2. Real motion (``motion_pairs``): pairs where the moving slab scores worse than the still slab of
   the same subject and the pooled AUC, for the same three scores; the time per scan.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_SLAB_MODEL_DIR  # noqa: E402
from bids_qc.slab_detector.detector import load_detector  # noqa: E402
from bids_qc.training.cache import find_t1w  # noqa: E402
from bids_qc.training.slab import evaluation  # noqa: E402
from bids_qc.training.slab.cache import build_cache  # noqa: E402
from bids_qc.training.slab.train import load_stacks  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_SLAB_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--variants", type=int, default=8, help="simulated motions per held-out subject")
    ap.add_argument("--seed", type=int, default=1234, help="simulation seed (training used 0)")
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    detector = load_detector(args.model_dir)
    test = set(detector.manifest["training"]["test_subjects"])
    ixi, pairs = args.data / "ixi", args.data / "motion_pairs"
    sim = real = None
    if ixi.is_dir():
        scans = [(s, p) for s, p in find_t1w(ixi) if s in test]
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            paths = build_cache(scans, tmp, args.variants, args.seed, args.nprocs)
            print(f"simulated {len(paths)} held-out subjects x {args.variants} motions in "
                  f"{time.perf_counter() - t:.0f} s")
            sim = evaluation.simulated(detector, load_stacks(paths, sorted(paths)))
    else:
        print(f"no IXI data at {ixi}: simulated evaluation skipped")
    if pairs.is_dir():
        t = time.perf_counter()
        real = evaluation.real_pairs(detector, pairs)
        per_scan = (time.perf_counter() - t) / max(len(real["rows"]), 1)
        print(f"real pairs: {len(real['rows'])} slabs, {per_scan:.2f} s/slab (detector + both formulas)")
    else:
        print(f"no motion pairs at {pairs}: real-motion evaluation skipped")
    print(f"\nmodel {detector.model_id}, threshold {detector.threshold:.4g}\n")
    print(evaluation.format_tables(sim, real))
    if args.json:
        args.json.write_text(json.dumps({"simulated": sim and sim["table"],
                                         "real_pairs": real and real["summary"],
                                         "real_rows": real and real["rows"]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
