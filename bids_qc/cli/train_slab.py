"""``bids-qc-train-slab``: train the slab motion detector on a BIDS dataset of still T1w scans.

Steps: cache RAS 2 mm sagittal stacks with ``--variants`` mild simulated motions each -> hold
out ``--n-test`` subjects (same rule and seed as ``bids-qc-train``, so both models share their
test subjects) -> train on the other folds, validate on ``--fold`` -> threshold on validation ->
write the model folder -> evaluate on the held-out subjects (and on real pairs with
``--real-pairs``), next to Tenengrad and native SNR.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

from bids_qc import __version__
from bids_qc.slab_detector.detector import load_detector, save_detector
from bids_qc.slab_detector.network import NORMS
from bids_qc.training.cache import find_t1w
from bids_qc.training.slab import evaluation, model_card
from bids_qc.training.slab.cache import CACHE_VERSION, P_DENOISE, P_PSF, P_SITE, build_cache
from bids_qc.training.slab.simulation import AMPLITUDE_RANGE, MOVEMENTS
from bids_qc.training.slab.train import load_stacks, sensitivity_threshold, train
from bids_qc.training.splits import holdout_split, kfold_by_subject

LOGGER = logging.getLogger("bids_qc.train_slab")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bids-qc-train-slab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path, help="BIDS dataset of clean-looking T1w scans")
    p.add_argument("out_dir", type=Path, help="model folder to write")
    p.add_argument("--cache-dir", type=Path, required=True, help="where the stacks are cached")
    p.add_argument("--model-id", default="slab-motion-ixi-v1")
    p.add_argument("--variants", type=int, default=12, help="simulated motions per subject")
    p.add_argument("--n-test", type=int, default=20, help="held-out test subjects")
    p.add_argument("--k", type=int, default=5, help="folds of the rest; one of them validates")
    p.add_argument("--fold", type=int, default=0, help="the validation fold")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batches", type=int, default=300, help="batches per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, default=1e9, help="stop after the epoch that passes it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nprocs", type=int, default=2, help="processes for the cache")
    p.add_argument("--site-fraction", type=float, default=P_SITE,
                   help="share of pairs (after each scan's first) made on a site-like variation")
    p.add_argument("--psf-fraction", type=float, default=P_PSF,
                   help="share of pairs (after each scan's first) made with a wider point-spread function")
    p.add_argument("--denoise-fraction", type=float, default=P_DENOISE,
                   help="share of pairs (after each scan's first) whose twins are both given a "
                   "vendor-like edge-preserving filter after the motion (median or anisotropic "
                   "diffusion)")
    p.add_argument("--input-blur-mm", type=float, default=0.0,
                   help="fixed in-plane Gaussian (sigma, mm) the network applies to its input "
                   "(SlabNet: one sharpness for every scanner)")
    p.add_argument("--norm", choices=sorted(NORMS), default="batch",
                   help="normalisation in SlabNet's blocks (instance: each triplet's feature maps "
                   "normalised over themselves, so a scanner's overall contrast is divided out)")
    p.add_argument("--extra-scan", type=Path, action="append", default=[], metavar="NIFTI",
                   help="a clean scan of another scanner, used for training only (never held "
                   "out or validated on); repeat for several")
    p.add_argument("--extra-variants", type=int, help="simulated motions per extra scan "
                   "(default: --variants; a few scans of other scanners need more to show their "
                   "look under many motions)")
    p.add_argument("--extra-share", type=float, default=0.0,
                   help="share of training pairs drawn from the extra scans (0: drawn like any "
                   "subject)")
    p.add_argument("--contrast-fraction", type=float, default=0.0,
                   help="share of training triplets given a random monotone tone curve (T1 "
                   "contrast of other sequences)")
    p.add_argument("--air-floor-fraction", type=float, default=0.0,
                   help="share of training pairs whose air is raised to a smooth non-zero floor "
                   "(0.5-5 %% of the bright level, both twins alike; scanners that store filtered air)")
    p.add_argument("--real-pairs", type=Path, help="folder with labels.tsv of real motion pairs "
                   "(reported only; never used for training or for choosing anything)")
    return p


def extra_id(path: Path) -> str:
    """Cache key of an extra scan: ``x`` + its file name without ``sub-`` and suffixes (IXI
    subject labels are digits only, so these cannot collide)."""
    name = path.name.split(".")[0].removeprefix("sub-")
    return "x" + "".join(c if c.isalnum() else "-" for c in name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    scans = find_t1w(args.bids_dir)
    if not scans:
        LOGGER.error("no T1w scans found in %s", args.bids_dir)
        return 1
    extra_scans = [(extra_id(p), p) for p in args.extra_scan]
    extra_variants = args.extra_variants or args.variants
    cache = dict(seed=args.seed, nprocs=args.nprocs, p_site=args.site_fraction, p_psf=args.psf_fraction,
                 p_denoise=args.denoise_fraction)
    paths = build_cache(scans, args.cache_dir, args.variants, **cache)
    if extra_scans:  # same folder as the site's scans when the variant counts agree
        paths.update(build_cache(extra_scans, args.cache_dir, extra_variants, **cache))
    pool, test = holdout_split([s for s, _ in scans], args.n_test, args.seed)
    train_ids, val_ids = kfold_by_subject(pool, args.k, args.seed)[args.fold]
    extra_ids = [s for s, _ in extra_scans]
    LOGGER.info("%d train (+%d extra scans), %d validation, %d held-out subjects", len(train_ids),
                len(extra_ids), len(val_ids), len(test))
    net, history, val = train(load_stacks(paths, train_ids), load_stacks(paths, val_ids),
                              epochs=args.epochs, batches=args.batches, batch_size=args.batch_size,
                              lr=args.lr, seed=args.seed, max_minutes=args.max_minutes,
                              input_blur_mm=args.input_blur_mm,
                              extra_set=load_stacks(paths, extra_ids), extra_share=args.extra_share,
                              contrast_fraction=args.contrast_fraction,
                              air_fraction=args.air_floor_fraction, norm=args.norm,
                              progress=LOGGER.info)
    threshold = sensitivity_threshold(val["scores"], val["amplitudes"])
    command = "bids-qc-train-slab " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    extra = {"bids_qc_version": __version__, "seed": args.seed, "command": command,
             "simulation": {"amplitude_deg_mm": list(AMPLITUDE_RANGE), "movements": list(MOVEMENTS),
                            "variants_per_subject": args.variants,
                            "site_fraction": args.site_fraction, "psf_fraction": args.psf_fraction,
                            "denoise_fraction": args.denoise_fraction,
                            "cache_version": CACHE_VERSION, "extra_variants": extra_variants,
                            "extra_share": args.extra_share,
                            "contrast_fraction": args.contrast_fraction,
                            "air_floor_fraction": args.air_floor_fraction},
             "training": {"data": str(args.bids_dir), "train_subjects": len(train_ids) + len(extra_ids),
                          "extra_training_scans": [str(p) for p in args.extra_scan],
                          "val_subjects": len(val_ids), "test_subjects": test,
                          "epochs_run": len(history),
                          "best_epoch": min(history, key=lambda r: r["loss"])["epoch"],
                          "history": history}}
    save_detector(args.out_dir, net, model_id=args.model_id, threshold=threshold, extra=extra)
    detector = load_detector(args.out_dir)
    held = evaluation.simulated(detector, load_stacks(paths, test))
    real = evaluation.real_pairs(detector, args.real_pairs) if args.real_pairs else None
    evaluation.write_heldout_benchmark(args.out_dir, held, real)
    print(evaluation.format_tables(held, real))
    model_card.main([str(args.out_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
