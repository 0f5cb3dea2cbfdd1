#!/usr/bin/env python
"""Held-out evaluation of a shipped model folder, reproducible in one command.

    python benchmarks/bench_heldout.py [--model-dir DIR (default: the shipped model)] [--data ../shared/data]

1. Simulated artefacts on the model's held-out IXI subjects (listed in its manifest, never trained
   on): every grade combination drawn as in training, re-simulated here from the raw scans with a
   fixed seed (motion timed as TorchIO's RandomMotion; ``--motion-timing uniform`` for the
   sorted uniform times the shipped models were trained on) -> balanced accuracy (with a 95 %
   interval from resampling whole subjects) / sensitivity / specificity / AUC per detector and
   for the tier decisions, beside the published targets.
2. Each artefact alone vs clean on the same subjects: each detector's AUC beside the AUC of the
   metric a user would otherwise screen with, computed on the same images - motion: the Tenengrad
   formula (bids_qc.metrics.tenengrad, the bar from BASELINES.md); contrast: ND-WGM
   (bids_qc.metrics.nd_wgm with the template's tissue masks on the model grid); noise: the white
   matter's own SNR, mean / SD (MRIQC's snr_wm; the 2.5 mm box holds too little air for the app's
   air-based SNR).
3. Real motion (motion_pairs): what the app says for each slab and how the slab motion detector
   (the app's detector for slabs, ``models/slab-motion-agree-v1``) and the native-space metrics
   (snr_native, Tenengrad) rank the moving slab against the still one of the same subject.
4. Bright-tail invariance: each held-out clean scan with its intensities above the reference level
   compressed (x0.5) or stretched (x2) - brighter or dimmer vessels, no artefact - and how many
   clean scans each detector calls positive, and how far its probability moves.
5. Clip-level invariance (models with the clipped min-max normalisation): the same clean scans
   normalised with the clip level moved to x0.95 ... x1.05 of their 99.5th percentile - tissue a
   few per cent brighter or darker relative to scalp fat and vessels, as between subjects (the IXI
   white matter varies by 2.6 %), no artefact - counted the same way.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing it, as the other benchmarks

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.evaluation.heldout_draw import (  # noqa: E402
    DEFAULT_SAMPLES_PER_SUBJECT,
    DEFAULT_SEED,
    NoHeldOutSubjects,
    draw_json,
    heldout_draw,
)
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.simulation import MOTION_TIMINGS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BIDS_QC_DATA", ROOT / "../shared/data")))
    ap.add_argument("--samples-per-subject", type=int, default=DEFAULT_SAMPLES_PER_SUBJECT)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--motion-timing", choices=MOTION_TIMINGS, default="torchio",
                    help="when the simulated movements happen in k-space (bids_qc.simulation)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model_dir)
    try:
        out = heldout_draw(bundle, args.data, samples_per_subject=args.samples_per_subject, seed=args.seed,
                           motion_timing=args.motion_timing)
    except NoHeldOutSubjects as err:
        print(err, file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(draw_json(out))
    print(f"\ntotal {out['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
