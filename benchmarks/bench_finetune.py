#!/usr/bin/env python
"""Fine-tuning cost and effect on N annotated scans (issue 8 target: 100 scans <= 5 min).

    python benchmarks/bench_finetune.py [--n 100] [--model-dir DIR (default: the shipped model)]
                                        [--data ../shared/data] [--cache-dir DIR]

Annotated scans are IXI scans with simulated artefacts (grades drawn as in training, so the
'ratings' are exact). Their model inputs come from a training cache (``--cache-dir``, as written
by bids-qc-train) or are preprocessed here; that preparation is timed separately, because the
group level reads the inputs the participant level stored. The timed part is what the group level
does: six detectors, head-only fine-tuning, 5-fold CV by subject. Prints seconds and the
cross-validated balanced accuracy before vs after, per detector.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.grading import binary_labels  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.preprocessing import PREPROCESSING_VERSION, preprocess  # noqa: E402
from bids_qc.record import DETECTORS  # noqa: E402
from bids_qc.simulation import simulate  # noqa: E402
from bids_qc.training.data import draw_grades  # noqa: E402
from bids_qc.training.finetune import cross_validated_finetune  # noqa: E402


def clean_volumes(args, grid, n_subjects):
    if args.cache_dir:
        pattern = args.cache_dir / f"prep-v{PREPROCESSING_VERSION}_*" / "*.npz"  # this preprocessing only
        files = sorted(glob.glob(str(pattern)))[:n_subjects]
        if files:
            return [(Path(f).stem.split("_")[0], np.load(f)["clean"].astype(np.float32)) for f in files]
    scans = sorted((args.data / "ixi").glob("sub-*/anat/*_T1w.nii.gz"))[:n_subjects]
    out = []
    for i, path in enumerate(scans, 1):
        out.append((path.name.split("_")[0], preprocess(path, grid=grid, with_registered=False).scaled))
        print(f"  preprocessed {i}/{len(scans)}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="annotated scans")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BIDS_QC_DATA", ROOT / "../shared/data")))
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model_dir)
    grid = bundle.grid
    t0 = time.perf_counter()
    subjects = clean_volumes(args, grid, min(args.n, 115))
    rng = np.random.default_rng(7)
    volumes, grades, subj = [], [], []
    for i in range(args.n):
        name, clean = subjects[i % len(subjects)]
        g = draw_grades(rng)
        vol, _ = simulate(clean, grid.affine, g, rng)
        volumes.append(grid.normalise(vol))
        grades.append(g)
        subj.append(name)
    prep = time.perf_counter() - t0
    x = torch.from_numpy(np.stack(volumes))[:, None]
    print(f"\n{args.n} annotated scans ({len(set(subj))} subjects) prepared in {prep:.0f} s "
          f"(not part of the group-level cost: the participant level stores the inputs)")
    print(f"{'detector':<20}{'n':>5}{'b.acc before':>14}{'b.acc after (CV)':>18}{'seconds':>9}")
    t_all = time.perf_counter()
    for det in DETECTORS:
        a = det.split("_")[0]
        labels = binary_labels(det, [g[a] for g in grades])
        t = time.perf_counter()
        res = cross_validated_finetune(bundle.members[0][det], x, labels, subj, k=5, epochs=args.epochs,
                                       threshold=bundle.thresholds[det])
        print(f"{det:<20}{res['n_scans']:>5}{100 * res['before']['balanced_accuracy']:>14.1f}"
              f"{100 * res['after']['balanced_accuracy']:>18.1f}{time.perf_counter() - t:>9.1f}")
    total = time.perf_counter() - t_all
    print(f"\nfine-tuning all six detectors on {args.n} scans: {total:.0f} s "
          f"({total / 60:.1f} min; target <= 5 min) with {args.threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
