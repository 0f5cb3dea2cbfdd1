"""``bids-qc-calibrate``: choose the decision thresholds of a trained model folder on its
validation subjects, then re-score its held-out subjects at those thresholds.

For folders trained before ``bids-qc-train`` calibrated by itself (it now does unless
``--no-calibrate``). The validation and test images are rebuilt from the training cache exactly
as ``bids-qc-train`` drew them (same subjects from the manifest, same seeds), so pass the same
``--seed`` and ``--*-samples-per-subject`` as the training command. The manifest gets the new
thresholds, ``training.calibration`` (per detector: threshold, validation balanced accuracy at 0.5
and at the threshold, this command), ``metrics.heldout_simulated`` at the new thresholds and
``metrics.heldout_simulated_at_0.5``; the model card is re-rendered. Weights are not touched, so
their checksums stay valid.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import torch

from bids_qc.models import MANIFEST, load_bundle
from bids_qc.record import DETECTORS, detector_names
from bids_qc.training.cache import build_cache, cache_settings
from bids_qc.training.calibration import METHODS, calibrate_thresholds, check_keep_youden
from bids_qc.training.data import images_of
from bids_qc.training.ensemble import MeanEnsemble
from bids_qc.training.evaluate import evaluate_detectors
from bids_qc.training.model_card import render_model_card

LOGGER = logging.getLogger("bids_qc.calibrate")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bids-qc-calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="model folder written by bids-qc-train")
    p.add_argument("bids_dir", type=Path, help="the BIDS dataset it was trained on")
    p.add_argument("--cache-dir", type=Path, required=True, help="the training cache")
    p.add_argument("--val-samples-per-subject", type=int, default=6)
    p.add_argument("--test-samples-per-subject", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--objective", choices=sorted(METHODS), default="youden",
                   help="youden: each detector at its own Youden point (default, as earlier folders "
                        "were calibrated); tiers: from there, thresholds moved jointly to serve the tier "
                        "verdict as well as the detectors (see bids_qc.training.calibration)")
    p.add_argument("--keep-youden", default="", metavar="DETECTORS",
                   help="with --objective tiers: comma-separated detectors left at their Youden points "
                        "while the others move (e.g. noise_severe)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "bids-qc-calibrate " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        keep_youden = detector_names(args.keep_youden)
        check_keep_youden(keep_youden, args.objective)
    except ValueError as err:
        raise SystemExit(f"bids-qc-calibrate: {err}") from err
    bundle = load_bundle(args.model_dir)
    manifest = bundle.manifest
    training = manifest["training"]
    schemes = {d: {k: manifest["detectors"][d][k] for k in ("negative", "positive")} for d in DETECTORS}
    n_variants, motion_timing = cache_settings(manifest)
    entries = build_cache(args.bids_dir, args.cache_dir, bundle.grid, n_variants, args.seed,
                          motion_timing=motion_timing)
    for e in entries:
        e.load()

    folds = training["folds"]
    if len(folds) != len(bundle.members):
        raise SystemExit(f"{args.model_dir}: {len(bundle.members)} members but {len(folds)} folds in {MANIFEST}")
    pairs = [(nets, images_of(entries, f["val_subjects"], args.val_samples_per_subject, args.seed,
                                 "val", bundle.grid))
             for nets, f in zip(bundle.members, folds)]
    calibration = calibrate_thresholds(pairs, schemes, objective=args.objective, keep_youden=keep_youden)
    thresholds = {d: c["threshold"] for d, c in calibration.items()}
    for det, c in calibration.items():
        LOGGER.info("%s: threshold %.3f, validation balanced accuracy %.3f at 0.5 -> %.3f", det,
                    c["threshold"], c["val_balanced_accuracy_at_0.5"], c["val_balanced_accuracy"])
    test_set = images_of(entries, training["test_subjects"], args.test_samples_per_subject, args.seed,
                         "test", bundle.grid)
    nets = {d: MeanEnsemble([m[d] for m in bundle.members]).eval() for d in DETECTORS}
    metrics = manifest.setdefault("metrics", {})
    metrics["heldout_simulated_at_0.5"] = evaluate_detectors(nets, test_set, schemes=schemes)
    metrics["heldout_simulated"] = evaluate_detectors(nets, test_set, schemes=schemes, thresholds=thresholds)
    for det in DETECTORS:
        manifest["detectors"][det]["threshold"] = thresholds[det]
    training["calibration"] = {"method": METHODS[args.objective], "objective": args.objective,
                               "keep_youden": keep_youden, "detectors": calibration, "command": command}
    (args.model_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (args.model_dir / "MODEL_CARD.md").write_text(render_model_card(manifest))
    print(json.dumps(metrics["heldout_simulated"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
