"""``bids-qc-train``: pre-train the six detectors on a BIDS dataset of clean-looking T1w scans.

Steps: cache preprocessed volumes -> hold out test subjects -> K-fold CV by subject (train the
folds asked for, keep each fold's lowest-validation-loss epoch) -> choose each detector's
threshold on the validation subjects (Youden, or ``--calibration-objective tiers``;
``--no-calibrate`` keeps 0.5) -> write a model folder whose members are the trained folds ->
evaluate on the held-out subjects and store every figure and the exact command line in the manifest.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

from bids_qc import __version__
from bids_qc.grading import LABEL_SCHEMES, LABEL_SCHEMES_PAPER
from bids_qc.models import load_bundle, save_bundle
from bids_qc.preprocessing import NORMALISATIONS, ModelGrid
from bids_qc.record import DETECTORS, detector_names
from bids_qc.simulation import MOTION_TIMINGS
from bids_qc.training.cache import build_cache
from bids_qc.training.calibration import METHODS, calibrate_thresholds, check_keep_youden
from bids_qc.training.data import GRADE_PROBS, SimulatedSet, images_of
from bids_qc.training.ensemble import MeanEnsemble
from bids_qc.training.evaluate import evaluate_detectors
from bids_qc.training.loop import SELECTION, train_detectors
from bids_qc.training.model_card import render_model_card
from bids_qc.training.splits import holdout_split, kfold_by_subject

LOGGER = logging.getLogger("bids_qc.train")


def _factor_range(value: str) -> tuple[float, float]:
    """``--tail-augment`` / ``--clip-augment``: ``LOW,HIGH`` with 0 < LOW <= HIGH."""
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0.5,2), got {value!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"need 0 < LOW <= HIGH, got {value!r}")
    return low, high


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bids-qc-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path, help="BIDS dataset of clean-looking T1w scans")
    p.add_argument("model_dir", type=Path, help="model folder to write")
    p.add_argument("--cache-dir", type=Path, required=True, help="where preprocessed volumes are cached")
    p.add_argument("--model-id", default=None, help="model id (default: folder name)")
    p.add_argument("--n-test", type=int, default=20, help="held-out test subjects (never trained on)")
    p.add_argument("--k", type=int, default=5, help="cross-validation folds (split by subject)")
    p.add_argument("--folds", default="0", help="folds to train: comma list or 'all' (default 0)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-minutes", type=float, default=None, help="time budget per fold")
    p.add_argument("--samples-per-subject", type=int, default=4, help="training samples/subject/epoch")
    p.add_argument("--val-samples-per-subject", type=int, default=6)
    p.add_argument("--test-samples-per-subject", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=None, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights, updated "
                   "every step with this decay (e.g. 0.998, about 500 steps), instead of the raw "
                   "weights of one epoch; steadier when the validation loss swings")
    p.add_argument("--select-on", choices=sorted(SELECTION), default="loss",
                   help="keep each detector's epoch with the lowest validation loss (default) or the "
                   "highest validation AUC; AUC ignores how confident the probabilities are, which "
                   "matters when the thresholds are re-chosen after training anyway")
    p.add_argument("--tail-augment", type=_factor_range, default=None, metavar="LOW,HIGH",
                   help="stretch the bright intensity tail (above the 99.5th percentile) of each "
                   "training image by a log-uniform factor in [LOW, HIGH], e.g. 0.5,2: teaches the "
                   "detectors that a brighter or dimmer maximum (vessels, fat) is not an artefact; "
                   "validation and test images are left as they are")
    p.add_argument("--clip-augment", type=_factor_range, default=None, metavar="LOW,HIGH",
                   help="with --normalisation clipped-minmax: move the clip level of each training "
                   "and validation image to a log-uniform factor in [LOW, HIGH] of its 99.5th "
                   "percentile, e.g. 0.93,1.075: teaches the detectors that tissue a few per cent "
                   "brighter or darker relative to the scalp fat and vessels is not an artefact "
                   "(validation too, so the kept epoch and the thresholds are those that hold "
                   "under it; the held-out test images are left as they are)")
    p.add_argument("--normalisation", choices=sorted(NORMALISATIONS), default="minmax",
                   help="input intensity normalisation, recorded in the manifest and applied by the "
                   "app: 'minmax' (published; the brightest voxel sets the scale) or "
                   "'clipped-minmax' (clip at the 99.5th percentile first, so a longer or shorter "
                   "bright tail of vessels and fat does not change the tissue's normalised brightness)")
    p.add_argument("--grid-spacing", type=float, default=ModelGrid().spacing, metavar="MM",
                   help=f"voxel size of the model grid (default {ModelGrid().spacing:g}); the box "
                   "stays the same MNI extent, so e.g. 2 gives 80x100x80 voxels (about twice the "
                   "training cost per image, finer cortex for the contrast and noise detectors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, cache and draws")
    p.add_argument("--draw-seed", type=int, default=None,
                   help="seed of the training draws and batch order only (default --seed); give a "
                   "new one with --init-from so the continuation sees images it has not seen")
    p.add_argument("--motion-variants", type=int, default=3, help="cached motion variants/severity")
    p.add_argument("--motion-timing", choices=MOTION_TIMINGS, default="uniform",
                   help="when in k-space the simulated movements happen: 'uniform' (default; sorted "
                        "uniform times, as every shipped model was trained: the widest variety), "
                        "'torchio' (as TorchIO's RandomMotion: evenly spaced with a little jitter, "
                        "the published protocol that bench_heldout.py scores by default; a model "
                        "trained on it alone misses severe motion timed otherwise) or 'mixed'")
    p.add_argument("--noise-severe-scheme", choices=["coherent", "paper"], default="coherent",
                   help="'paper': noise severe detector trained 0 vs 1+2 as published")
    p.add_argument("--nprocs", type=int, default=2, help="processes for caching")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--half", action=argparse.BooleanOptionalAction, default=True,
                   help="store weights in float16 (default)")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="choose decision thresholds on the validation subjects (default) or keep 0.5")
    p.add_argument("--calibration-objective", choices=sorted(METHODS), default="youden",
                   help="how --calibrate chooses them (as bids-qc-calibrate --objective; default youden)")
    p.add_argument("--calibration-keep-youden", default="", metavar="DETECTORS",
                   help="with --calibration-objective tiers: comma-separated detectors left at their "
                        "Youden points (as bids-qc-calibrate --keep-youden)")
    p.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                   help="warm start: continue training a model folder made by this command with "
                   "the same data, seed, folds and held-out subjects (checked)")
    p.add_argument("--train-only", default=None, metavar="DETECTORS",
                   help="with --init-from: comma list of detectors to train further; the others "
                   "are copied unchanged")
    p.add_argument("--reinit", action="store_true",
                   help="with --train-only: train those detectors again from a fresh random "
                   "initialisation (seeded) instead of continuing their weights; the others are "
                   "copied unchanged. For a detector whose continuation has stalled")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def warm_start_problems(manifest: dict, test: list, folds: list, wanted, grid: ModelGrid) -> list[str]:
    """Why the model of ``manifest`` cannot be trained further on this split (empty if it can):
    its held-out subjects, folds and grid must be the ones of this run, or held-out or
    validation subjects would already have been trained on."""
    problems = []
    training = manifest.get("training") or {}
    if sorted(training.get("test_subjects") or []) != sorted(test):
        problems.append("its held-out test subjects differ from this run's")
    by_fold = {f.get("fold"): f for f in training.get("folds") or []}
    for f in wanted:
        old = by_fold.get(f)
        if old is None:
            problems.append(f"it has no fold {f}")
        elif sorted(old["train_subjects"]) != sorted(folds[f][0]) or \
                sorted(old["val_subjects"]) != sorted(folds[f][1]):
            problems.append(f"its fold {f} has other training/validation subjects")
    old = ModelGrid.from_dict(manifest["input"])
    if (old.shape, old.spacing, old.origin) != (grid.shape, grid.spacing, grid.origin):
        problems.append(f"its input grid differs ({old.shape_text} at {old.spacing:g} mm, "
                        f"this run {grid.shape_text} at {grid.spacing:g} mm)")
    return problems


def _warm_start_outcome(states: dict, start: dict, manifest: dict, fold: int, report: dict,
                        reinit: bool = False):
    """Warm start: the network of every detector (trained ones: the best of their starting weights,
    scored as epoch 0, and their trained epochs, or with ``reinit`` of their epochs from a fresh
    initialisation; the others: the starting ones, with the figures of the starting manifest) and,
    per detector, what was kept, for the manifest."""
    old = next(r for r in manifest["training"]["folds"] if r["fold"] == fold)["val_at_best"]
    nets, outcome = {}, {}
    for det in DETECTORS:
        st = states.get(det)
        if st is None:
            nets[det], outcome[det] = start[det], {"trained": False, "kept": "start"}
            report["val_at_best"][det] = old.get(det)
            continue
        nets[det] = st.net
        if reinit:
            outcome[det] = {"trained": True, "kept": "reinitialised", "best_epoch": st.best_epoch,
                            **{f"best_{k}": st.best[k] for k in ("val_loss", "val_auc")}}
            continue
        outcome[det] = {"trained": True, "kept": "start" if st.best_epoch == 0 else "continued",
                        "best_epoch": st.best_epoch,
                        **{f"{which}_{k}": h[k] for which, h in (("start", st.history[0]), ("best", st.best))
                           for k in ("val_loss", "val_auc")}}
    return nets, {"from": manifest.get("model_id"), "detectors": outcome}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.ema_decay is not None and not 0 <= args.ema_decay <= 1:
        LOGGER.error("--ema-decay must lie in [0, 1], got %s", args.ema_decay)
        return 2
    command = "bids-qc-train " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    schemes = LABEL_SCHEMES_PAPER if args.noise_severe_scheme == "paper" else LABEL_SCHEMES
    if args.train_only and args.init_from is None:
        LOGGER.error("--train-only needs --init-from")
        return 2
    if args.reinit and not args.train_only:
        LOGGER.error("--reinit needs --init-from and --train-only (the detectors to start afresh)")
        return 2
    try:
        keep_youden = detector_names(args.calibration_keep_youden)
        check_keep_youden(keep_youden, args.calibration_objective, schemes)
    except ValueError as exc:
        LOGGER.error("--calibration-keep-youden: %s", exc)
        return 2
    try:
        train_only = detector_names(args.train_only)
    except ValueError as exc:
        LOGGER.error("--train-only: %s", exc)
        return 2
    try:
        grid = ModelGrid(normalisation=NORMALISATIONS[args.normalisation]).at_spacing(args.grid_spacing)
    except ValueError as exc:
        LOGGER.error("--grid-spacing: %s", exc)
        return 2
    if args.clip_augment and grid.normalisation != NORMALISATIONS["clipped-minmax"]:
        LOGGER.error("--clip-augment needs --normalisation clipped-minmax (min-max has no clip level)")
        return 2
    t0 = time.perf_counter()
    entries = build_cache(args.bids_dir, args.cache_dir, grid, args.motion_variants, args.seed,
                          args.nprocs, args.motion_timing)
    for e in entries:
        e.load()
    subjects = [e.subject for e in entries]
    pool, test = holdout_split(subjects, args.n_test, args.seed)
    folds = kfold_by_subject(pool, args.k, args.seed)
    wanted = range(args.k) if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    LOGGER.info("%d scans cached in %.0f s; %d subjects for CV (%d folds), %d held out",
                len(entries), time.perf_counter() - t0, len(pool), args.k, len(test))
    init, trained_dets = None, list(DETECTORS)
    if args.init_from is not None:
        init = load_bundle(args.init_from)
        problems = warm_start_problems(init.manifest, test, folds, wanted, grid)
        if problems:
            LOGGER.error("cannot warm-start from %s: %s", args.init_from, "; ".join(problems))
            return 2
        if train_only:
            trained_dets = train_only
            if init.grid.normalisation != grid.normalisation:
                LOGGER.error("--train-only: %s normalises its input %r, this run %r; the detectors "
                             "not trained would see inputs they were not made for (train all six)",
                             args.init_from, init.grid.normalisation, grid.normalisation)
                return 2
    draw_seed = args.seed if args.draw_seed is None else args.draw_seed
    members, fold_reports, val_sets = [], [], []
    for f in wanted:
        train_subj, val_subj = folds[f]
        train_set = SimulatedSet([e for e in entries if e.subject in train_subj],
                                 args.samples_per_subject, seed=draw_seed, grid=grid,
                                 tail_range=args.tail_augment, clip_range=args.clip_augment)
        val_set = images_of(entries, val_subj, args.val_samples_per_subject, args.seed, "val", grid,
                            clip_range=args.clip_augment)
        LOGGER.info("fold %d: %d train / %d val subjects, %d samples per epoch", f, len(train_subj),
                    len(val_subj), len(train_set))
        t_fold = time.perf_counter()
        start = init.members[init.manifest["training"]["folds_trained"].index(f)] if init else None
        states = train_detectors(trained_dets, train_set, val_set, input_shape=grid.shape,
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 max_minutes=args.max_minutes, seed=draw_seed + f, schemes=schemes,
                                 init=None if args.reinit else start, ema_decay=args.ema_decay,
                                 select_on=args.select_on)
        report = {
            "fold": f, "train_subjects": train_subj, "val_subjects": val_subj,
            "minutes": round((time.perf_counter() - t_fold) / 60, 2),
            "best_epoch": {d: s.best_epoch for d, s in states.items()},
            "val_at_best": {d: s.best for d, s in states.items() if s.best is not None},
            "history": {d: s.history for d, s in states.items()},
        }
        nets = {d: s.net for d, s in states.items()}
        if init is not None:
            nets, report["warm_start"] = _warm_start_outcome(states, start, init.manifest, f, report,
                                                             args.reinit)
        members.append(nets)
        val_sets.append(val_set)
        fold_reports.append(report)
    test_set = images_of(entries, test, args.test_samples_per_subject, args.seed, "test", grid)
    nets = {d: MeanEnsemble([m[d] for m in members]).eval() for d in DETECTORS}
    calibration = (calibrate_thresholds(list(zip(members, val_sets)), schemes,
                                        objective=args.calibration_objective, keep_youden=keep_youden)
                   if args.calibrate else {})
    thresholds = {d: c["threshold"] for d, c in calibration.items()}
    test_metrics = evaluate_detectors(nets, test_set, schemes=schemes, thresholds=thresholds)
    detectors = {d: {**schemes[d], "threshold": thresholds.get(d, 0.5)} for d in DETECTORS}
    extra = {
        "bids_qc_version": __version__,
        "seed": args.seed,
        "draw_seed": draw_seed,
        "command": command,
        "training": {
            "data": str(args.bids_dir), "n_scans": len(entries), "n_subjects": len(set(subjects)),
            "n_cv_subjects": len(pool), "test_subjects": test, "k_folds": args.k,
            "folds_trained": list(wanted), "grade_probabilities": list(GRADE_PROBS),
            "motion_timing": args.motion_timing, "motion_variants": args.motion_variants,
            "samples_per_subject_per_epoch": args.samples_per_subject, "epochs_max": args.epochs,
            "max_minutes_per_fold": args.max_minutes, "batch_size": args.batch_size, "lr": args.lr,
            "optimizer": "Adam", "loss": "class-weighted 2-logit cross-entropy",
            "selection": SELECTION[args.select_on] + " epoch" + (
                f" of the weight average (EMA, decay {args.ema_decay} per step)"
                if args.ema_decay is not None else ""),
            "ema_decay": args.ema_decay, "select_on": args.select_on,
            "tail_augment": list(args.tail_augment) if args.tail_augment else None,
            "clip_augment": list(args.clip_augment) if args.clip_augment else None,
            "minutes_total":
                round((time.perf_counter() - t0) / 60, 2),
            "threads": args.threads, "folds": fold_reports,
            "warm_start": str(args.init_from) if args.init_from else None,
            "calibration": {"method": METHODS[args.calibration_objective],
                            "objective": args.calibration_objective, "keep_youden": keep_youden,
                            "detectors": calibration} if calibration else None,
        },
        "metrics": {"heldout_simulated": test_metrics},
    }
    folder = save_bundle(args.model_dir, members, model_id=args.model_id or args.model_dir.name,
                         trained=True, grid=grid, detectors=detectors, extra=extra,
                         dtype=torch.float16 if args.half else torch.float32)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "MODEL_CARD.md").write_text(render_model_card(manifest))
    LOGGER.info("wrote %s in %.1f min", folder, (time.perf_counter() - t0) / 60)
    print(json.dumps(test_metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
