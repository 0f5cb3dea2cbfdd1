#!/usr/bin/env python
"""Would motion severity be learnable if it were defined by what the image shows?

    python benchmarks/bench_motion_damage_probe.py [--data ../shared/data] [--cache /tmp/bids_qc_ss_bench] \
        [--seeds 2045,2046,2047,2048,2049] [--n-train 240] [--cut 0.273] [--json out.json]

Motion grade 2 is defined by the published amplitude (5-8 degrees / mm per axis against 2-4),
which a moved image hardly shows (``bench_motion_severity.py``; the shipped severe detector sits
near 50 % on scanner-space motion). This asks whether the *visible damage* instead
(:func:`bids_qc.scanner_space.motion_damage`: the relative difference from the
nearest still position of the head) is in what the shipped motion networks already compute:

1. the project's training simulator moves the head of ``--n-train`` clean scans on their own grid
   (:func:`bids_qc.scanner_space.apply_motion`, both amplitude classes; IXI training and validation
   subjects, Philips ADNI and Utah; no held-out subject or site), each image's damage is measured
   against the clean scan and the image goes through the app's preprocessing;
2. a linear probe (scikit-learn, on the frozen convolutional features of the shipped
   ``motion_severe`` network) is fitted there to the amplitude class and to ``damage >= --cut``;
3. both are scored on the *evaluation* simulator's moved images cached by ``bench_scanner_space.py``
   (``--seeds``; independent numpy k-space motion; held-out IXI subjects, held-out sites, other
   sites): AUC against the evaluation's own amplitude class and damage label, and the Spearman
   correlation of a ridge regression of the damage.

High AUC for damage and chance for amplitude means: the features see how much an image is
damaged, not how far the head moved. Needs the seeds' caches (run ``bench_scanner_space.py
--finest-mm 0`` with the same ``--cache`` first). About 5 minutes for 240 images on 2 cores
(plus preparing the training scans once, ~5 minutes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc import scanner_space as ss  # noqa: E402
from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.training.scanner_data import (  # noqa: E402
    HELDOUT_SITES,
    load_scan_npz,
    prepare_scans,
    preprocess_variant,
    shared_data_sources,
)

SLOW_SITES = {"studyforrest"}  # 0.7 mm: a minute per image


def training_image(job) -> dict:
    """One moved image of the training simulator: ``{"x" (box), "amplitude_severe", "damage", "site"}``."""
    index, path, seed = job
    rng = np.random.default_rng([seed, index])
    scan = load_scan_npz(path)
    clean = scan.data.astype(np.float32)
    grade = 1 + index % 2
    params = ss.sample_artefacts({"motion": grade}, rng)[0]
    moved = ss.apply_motion(clean, scan.affine, params).astype(np.float32)
    pre = preprocess_variant(scan, moved, scan.affine)
    return {"x": pre.scaled.astype(np.float32), "amplitude_severe": grade == 2,
            "damage": ss.motion_damage(moved, [clean]), "site": scan.site}


def evaluation_images(cache: Path, seeds) -> list[dict]:
    out = []
    for seed in seeds:
        folder = cache / f"seed-{seed}_finest-0"
        if not folder.is_dir():
            raise SystemExit(f"{folder} missing: run bench_scanner_space.py --seed {seed} --finest-mm 0 "
                             f"--cache {cache} first")
        for path in sorted(folder.glob("*.npz")):
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                if meta["grades"]["motion"]:
                    out.append({"x": z["box"].astype(np.float32), "amplitude_severe": meta["grades"]["motion"] == 2,
                                "damage": meta["info"]["evidence"]["motion_damage"], "site": meta["site"]})
    return out


def features(bundle, images: list[dict]) -> np.ndarray:
    net = bundle.members[0]["motion_severe"].eval()
    rows = []
    with torch.no_grad():
        for im in images:
            x = torch.from_numpy(bundle.grid.normalise(im["x"]))[None, None]
            rows.append(net.features(x).flatten().numpy())
    return np.array(rows)


def main(argv=None) -> int:
    from scipy.stats import spearmanr
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=Path("/tmp/bids_qc_ss_bench"))
    p.add_argument("--seeds", default="2045,2046,2047,2048,2049")
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--cut", type=float, default=0.273,
                   help="damage from which an image counts as severe (the Youden point of the training "
                        "simulator's amplitude classes in an earlier development run; model card)")
    p.add_argument("--seed", type=int, default=9100)
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}")
        return 1
    t0 = time.perf_counter()
    # the model is loaded after the forked image workers: torch's threads must not exist yet
    manifest = json.loads((Path(DEFAULT_MODEL_DIR) / "manifest.json").read_text())
    held_out = set(manifest["training"]["test_subjects"])
    src = [(n, s, f) for n, s, f in shared_data_sources(args.data)
           if s not in HELDOUT_SITES and s not in SLOW_SITES and n not in held_out]
    scans = sorted(prepare_scans(src, args.cache / "scans_finest-0", args.nprocs, finest_mm=0))
    jobs = [(i, scans[i % len(scans)], args.seed) for i in range(args.n_train)]
    with get_context("fork").Pool(args.nprocs) as pool:
        train = pool.map(training_image, jobs)
    test = evaluation_images(args.cache, [int(s) for s in args.seeds.split(",")])
    torch.set_num_threads(max(1, args.nprocs))
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    ftrain, ftest = features(bundle, train), features(bundle, test)
    damage = np.array([im["damage"] for im in train])
    damage_test = np.array([im["damage"] for im in test])
    sites = np.array([im["site"] for im in test])
    groups = {"held-out IXI subjects": sites == "ixi-hh", "held-out sites": np.isin(sites, list(HELDOUT_SITES)),
              "other sites": ~np.isin(sites, ["ixi-hh", *HELDOUT_SITES])}
    print(f"training simulator: {len(train)} moved images, damage p10/50/90 "
          f"{np.round(np.percentile(damage, [10, 50, 90]), 3).tolist()}, {int((damage >= args.cut).sum())} "
          f">= {args.cut}; evaluation simulator: {len(test)} moved images, damage p10/50/90 "
          f"{np.round(np.percentile(damage_test, [10, 50, 90]), 3).tolist()}, {int((damage_test >= args.cut).sum())} >= {args.cut}")
    results = {}
    for label, y, y_test in (("amplitude class", [im["amplitude_severe"] for im in train],
                              [im["amplitude_severe"] for im in test]),
                             (f"damage >= {args.cut}", damage >= args.cut, damage_test >= args.cut)):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced"))
        score = probe.fit(ftrain, np.asarray(y)).predict_proba(ftest)[:, 1]
        y_test = np.asarray(y_test)
        results[label] = {g: {"n": int(m.sum()), "positives": int(y_test[m].sum()),
                              "auc": float(roc_auc_score(y_test[m], score[m])) if 0 < y_test[m].sum() < m.sum() else None}
                          for g, m in groups.items()}
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(0, 5, 11))).fit(ftrain, damage)
    predicted = ridge.predict(ftest)
    results["damage spearman"] = {g: float(spearmanr(predicted[m], damage_test[m])[0]) for g, m in groups.items()}
    print(f"{'probe fitted on the training simulator -> AUC on the evaluation simulator':<62}"
          + "".join(f"{g:>24}" for g in groups))
    for label in list(results)[:2]:
        cells = ["-" if e["auc"] is None else f"{e['auc']:.3f}" for e in results[label].values()]
        print(f"  {label:<60}" + "".join(f"{c} ({e['positives']}/{e['n']})".rjust(24)
                                         for c, e in zip(cells, results[label].values())))
    print(f"  {'damage regression, Spearman':<60}" + "".join(f"{v:>24.3f}" for v in results["damage spearman"].values()))
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
