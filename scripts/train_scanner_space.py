"""Fine-tune a detector bundle on scanner-space images (``scripts/scanner_space_images.py``).

All six detectors start from ``--init-from`` (the box-simulator model) and are trained on the
generated training images; the weight average (EMA) of the epoch with the lowest validation
loss is kept per detector (the starting weights are epoch 0 and win if nothing beats them).
With ``--head-only``, only the three fully connected layers are trained (convolutions frozen,
BatchNorm in eval mode: the app's site-transfer recipe, :func:`bids_qc.training.finetune.train_heads`),
on features computed once per image. Thresholds: the tier objective on the validation images.
Writes a model folder.

    python scripts/train_scanner_space.py /work/ss /work/ss/model --init-from bids_qc/data/models/conv5fc3-ixi-v2.6 \
        --model-id conv5fc3-ss-v3.0 --epochs 6 --max-minutes 40
    python scripts/train_scanner_space.py /work/ss3 /work/ss3/model-h --init-from bids_qc/data/models/conv5fc3-ixi-v2.6 \
        --model-id conv5fc3-ss-h1 --head-only --epochs 60

With ``--detectors`` (head-only), only the detectors named are trained and get new thresholds (at
their Youden point on the validation images: the tier objective needs all six); the others keep
``--init-from``'s networks and thresholds, so the folder differs from it in those detectors only.
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
from bids_qc.grading import LABEL_SCHEMES
from bids_qc.models import load_bundle, save_bundle
from bids_qc.record import DETECTORS
from bids_qc.training.calibration import METHODS, calibrate_thresholds
from bids_qc.training.finetune import train_heads
from bids_qc.training.loop import train_detectors
from bids_qc.training.scanner_data import GeneratedSet

LOGGER = logging.getLogger("train_scanner_space")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, nargs="+",
                   help="folder(s) with train/ and val/ (scanner_space_images.py); several are pooled, "
                        "the first one's split.json is recorded")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--init-from", type=Path, required=True)
    p.add_argument("--model-id", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-minutes", type=float, default=40)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head-only", action="store_true",
                   help="train only the fully connected head of each detector (--epochs over the "
                        "training images' frozen features; --max-minutes and --ema-decay unused; "
                        "--epochs 0: the starting weights, thresholds re-chosen on the validation images)")
    p.add_argument("--detectors", default=None,
                   help="comma-separated detectors to train (with --head-only); the rest are --init-from's")
    args = p.parse_args(argv)
    only = None if args.detectors is None else args.detectors.split(",")
    if only is not None and (not args.head_only or not set(only) <= set(DETECTORS)):
        p.error(f"--detectors needs --head-only and names among {', '.join(DETECTORS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "python scripts/train_scanner_space.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    init = load_bundle(args.init_from)
    grid = init.grid
    thresholds_only = args.head_only and args.epochs == 0  # the training images are not read
    train_set = GeneratedSet([] if thresholds_only else _images(args.images, "train"), grid)
    val_set = GeneratedSet(_images(args.images, "val"), grid)
    LOGGER.info("%d training / %d validation images", len(train_set), len(val_set))
    if thresholds_only:  # the starting weights; only the thresholds are chosen
        nets, fold = dict(init.members[0]), {"fold": 0, "thresholds_only": True}
    elif args.head_only:
        start = {d: n for d, n in init.members[0].items() if only is None or d in only}
        trained, head_logs = train_heads(start, train_set, val_set, LABEL_SCHEMES,
                                         epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                         seed=args.seed)
        nets = {**init.members[0], **trained}
        fold = {"fold": 0, "head_only": head_logs, "detectors_trained": sorted(start)}
    else:
        states = train_detectors(list(DETECTORS), train_set, val_set, input_shape=grid.shape,
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 max_minutes=args.max_minutes, seed=args.seed, init=init.members[0],
                                 ema_decay=args.ema_decay, select_on="loss")
        nets = {d: s.net for d, s in states.items()}
        fold = {"fold": 0, "best_epoch": {d: s.best_epoch for d, s in states.items()},
                "val_at_best": {d: s.best for d, s in states.items()},
                "history": {d: s.history for d, s in states.items()}}
    if only is None:
        calibration = calibrate_thresholds([(nets, val_set)], LABEL_SCHEMES, objective="tiers")
        objective = "tiers"
    else:  # the others keep their thresholds; the trained ones at their Youden point
        calibration = calibrate_thresholds([({d: nets[d] for d in only}, val_set)],
                                           {d: LABEL_SCHEMES[d] for d in only}, objective="youden")
        objective = "youden"
    detectors = {d: {**LABEL_SCHEMES[d], "threshold": calibration[d]["threshold"] if d in calibration
                     else init.thresholds[d]} for d in DETECTORS}
    split = json.loads((args.images[0] / "split.json").read_text())
    training = dict(init.manifest["training"])
    training.update({
        "data": "scanner-space images from ../shared/data (scripts/scanner_space_images.py; "
                "bids_qc/scanner_space.py)",
        "scanner_space": {"n_train_images": len(train_set), "n_val_images": len(val_set),
                          "other_sites_trained": split["other_sites_trained"],
                          "heldout_sites": split["heldout_sites"]},
        "warm_start": str(args.init_from), "epochs_max": args.epochs,
        "max_minutes_per_fold": args.max_minutes, "lr": args.lr, "batch_size": args.batch_size,
        "ema_decay": args.ema_decay, "minutes_total": round((time.perf_counter() - t0) / 60, 2),
        "head_only": args.head_only, "folds": [fold],
        "calibration": {"method": METHODS[objective], "objective": objective, "keep_youden": [],
                        "detectors": calibration,
                        **({} if only is None else {"thresholds_kept_from_init": sorted(set(DETECTORS) - set(only))})},
    })
    extra = {"bids_qc_version": __version__, "seed": args.seed, "command": command,
             "training": training, "metrics": {}}
    folder = save_bundle(args.model_dir, [nets], model_id=args.model_id, trained=True, grid=grid,
                         detectors=detectors, extra=extra, dtype=torch.float16)
    LOGGER.info("wrote %s in %.1f min", folder, (time.perf_counter() - t0) / 60)
    print(json.dumps(calibration, indent=1))
    return 0


def _images(folders: list[Path], part: str) -> list[Path]:
    return [f for folder in folders for f in sorted((folder / part).glob("img-*.npz"))]


if __name__ == "__main__":
    raise SystemExit(main())
