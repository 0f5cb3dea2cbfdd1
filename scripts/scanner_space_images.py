"""Make the scanner-space training and validation images (bids_qc.training.scanner_data).

Sources (``../shared/data``): the IXI HH scans (one site) and the other scanners (``vendors/``,
``singles/``). The IXI split is the shipped model's: its 20 held-out test subjects are never used
here, fold 0's train subjects make training images and its validation subjects validation
images. Whole sites are held out for the benchmark (``--heldout-sites``, default the United
Imaging, both Siemens scanners); the remaining other sites give training and validation images
(different draws of the same scan: one scan per site, so they teach site variety, they cannot
validate a site independently).

    python scripts/scanner_space_images.py ../shared/data /work/ss --n-train 2400 --n-val 360
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bids_qc.config import DEFAULT_MODEL_DIR
from bids_qc.training.data import GRADE_PROBS, parse_grade_probs
from bids_qc.training.scanner_data import (
    HELDOUT_SITES,
    generate,
    prepare_scans,
    shared_data_sources,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                   help="model folder whose IXI split (held-out subjects, fold 0) is kept")
    p.add_argument("--n-train", type=int, default=2400)
    p.add_argument("--n-val", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--heldout-sites", default=",".join(HELDOUT_SITES))
    p.add_argument("--probs", default=None,
                   help="P(grade 0, 1, 2) of each artefact, comma-separated (default: "
                        f"{','.join(map(str, GRADE_PROBS))})")
    p.add_argument("--only", choices=("train", "val"), default=None,
                   help="make only this set (image i of a set is the same whichever sets are made)")
    args = p.parse_args(argv)
    try:
        probs = parse_grade_probs(args.probs)
    except ValueError as exc:
        p.error(f"--probs: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    training = manifest["training"]
    fold = training["folds"][0]
    heldout_sites = set(args.heldout_sites.split(","))
    src = shared_data_sources(args.data)
    prepared = {Path(f).stem: f for f in prepare_scans(src, args.out / "scans", args.nprocs)}
    site_of = {name: site for name, site, _ in src}
    other = [n for n in prepared if site_of[n] != "ixi-hh" and site_of[n] not in heldout_sites]
    train = [prepared[s] for s in fold["train_subjects"] if s in prepared] + [prepared[n] for n in other]
    val = [prepared[s] for s in fold["val_subjects"] if s in prepared] + [prepared[n] for n in other]
    weights = {"ixi-hh": 0.7}
    if args.only in (None, "train"):
        generate(train, args.n_train, args.out / "train", args.seed, nprocs=args.nprocs,
                 site_weights=weights, probs=probs)
    if args.only in (None, "val"):
        generate(val, args.n_val, args.out / "val", args.seed + 1000, nprocs=args.nprocs,
                 site_weights={"ixi-hh": 0.6}, probs=probs)
    (args.out / "split.json").write_text(json.dumps(
        {"train": [str(t) for t in train], "val": [str(v) for v in val],
         "heldout_sites": sorted(heldout_sites), "test_subjects": training["test_subjects"],
         "other_sites_trained": sorted({site_of[n] for n in other})}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
