"""One draw of the held-out evaluation of a model bundle (``benchmarks/bench_heldout.py``; several
draws: ``benchmarks/bench_draws.py``): the simulated artefacts on the model's held-out subjects,
each artefact alone vs clean beside its baseline metric, the bright-tail and clip-level
invariance, and the real motion pairs. Prints the tables as it goes and returns the figures as
the dict that ``bench_heldout.py --json`` writes (:func:`draw_json`)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from bids_qc.evaluation.baseline_metrics import BaselineMetrics, artefact_vs_clean
from bids_qc.evaluation.detector_probabilities import predict
from bids_qc.evaluation.invariance import CLIP_FACTORS, TAIL_FACTORS, invariance
from bids_qc.evaluation.real_motion_pairs import real_pairs
from bids_qc.evaluation.subject_errors import errors_by_subject, print_error_concentration
from bids_qc.grading import binary_labels, tier_from_grades
from bids_qc.preprocessing import CLIPPED_MINMAX, preprocess
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.simulation import simulate
from bids_qc.training.augment import stretch_bright_tail
from bids_qc.training.calibration import youden_threshold
from bids_qc.training.data import GRADE_PROBS, simulated_draws
from bids_qc.training.evaluate import tier_scores
from bids_qc.training.metrics import auc, binary_scores, subject_bootstrap_ci
from bids_qc.training.model_card import PUBLISHED
from bids_qc.verdict import positive, verdict

DEFAULT_SAMPLES_PER_SUBJECT = 12
DEFAULT_SEED = 12345


class NoHeldOutSubjects(ValueError):
    """The model's manifest lists no held-out subjects: there is nothing to evaluate."""


def _ci(scores: dict) -> str:
    lo, hi = scores["balanced_accuracy_ci95"]
    return f"{100 * lo:.1f}-{100 * hi:.1f}"


def heldout_draw(bundle, data: Path, *, samples_per_subject: int = DEFAULT_SAMPLES_PER_SUBJECT,
                 seed: int = DEFAULT_SEED, motion_timing: str = "torchio",
                 with_real_pairs: bool = True) -> dict:
    """One held-out draw of ``bundle`` (a loaded model, :func:`bids_qc.models.load_bundle`) on the
    raw IXI scans under ``data/ixi`` (and, with ``with_real_pairs``, the real pairs under
    ``data/motion_pairs``, if present): prints the tables and returns the figures. Raises
    :class:`NoHeldOutSubjects` when the manifest lists none."""
    data = Path(data)
    schemes = bundle.manifest["detectors"]
    test_subjects = bundle.manifest.get("training", {}).get("test_subjects", [])
    if not test_subjects:
        raise NoHeldOutSubjects("the manifest lists no held-out subjects")
    grid = bundle.grid
    t0 = time.perf_counter()
    rows, vs_clean_rows, row_subject, tail_rows, clip_rows = [], [], [], [], []
    clipped = grid.normalisation == CLIPPED_MINMAX
    baselines = BaselineMetrics(grid)
    for i, sub in enumerate(test_subjects):
        path = data / "ixi" / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz"
        pre = preprocess(path, grid=grid, with_registered=False)
        rng = np.random.default_rng([seed, i])
        clean = predict(bundle, grid.normalise(pre.scaled))  # factor 1 of both invariance rows
        tail_rows.append([clean if f == 1 else predict(bundle, grid.normalise(stretch_bright_tail(pre.scaled, f)))
                          for f in TAIL_FACTORS])
        if clipped:
            clip_rows.append([clean if f == 1 else predict(bundle, grid.normalise(pre.scaled, f))
                              for f in CLIP_FACTORS])
        for grades, vol in simulated_draws(pre.scaled, grid.affine, rng, samples_per_subject, motion_timing):
            rows.append((grades, predict(bundle, grid.normalise(vol))))
            row_subject.append(i)
        vs_clean_rows.append((None, 0, clean, baselines(pre.scaled)))
        for artefact in ARTEFACTS:
            for grade in (1, 1, 2, 2):
                vol, _ = simulate(pre.scaled, grid.affine, {artefact: grade}, rng, motion_timing)
                vs_clean_rows.append((artefact, grade, predict(bundle, grid.normalise(vol)), baselines(vol)))
        print(f"[{i + 1}/{len(test_subjects)}] sub-{sub} done ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    out = {"model_id": bundle.model_id, "seed": seed, "motion_timing": motion_timing,
           "n_subjects": len(test_subjects), "n_images": len(rows),
           "detectors": {}, "tiers": {}}
    print(f"\nHeld-out simulated evaluation of {bundle.model_id}: {len(test_subjects)} subjects, "
          f"{len(rows)} images (grades drawn with P = {GRADE_PROBS}; seed {seed}; motion timing "
          f"{motion_timing})\n")
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
    print_error_concentration(out["detectors"], data / "ixi" / "participants.tsv")
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
    if with_real_pairs:
        out["real_motion_pairs"] = real_pairs(data, bundle)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def draw_json(out: dict) -> str:
    """The text of ``bench_heldout.py --json``: a :func:`heldout_draw` dict (numpy numbers as
    floats)."""
    return json.dumps(out, indent=1, default=float) + "\n"


def print_threshold_bound(detectors: dict) -> None:
    """Each detector's balanced accuracy at the best threshold for these very images: chosen on
    the test set, so an upper bound, not a result. Below a target it says no threshold reaches it
    and the network itself must separate the classes better."""
    print("\nAt the best threshold for these images (chosen on them: an upper bound, not a result):")
    for det, s in detectors.items():
        print(f"  {det:<18} {100 * s['best_threshold_balanced_accuracy']:5.1f} at {s['best_threshold']:.2f}"
              f" (shipped threshold: {100 * s['balanced_accuracy']:.1f}; published {PUBLISHED[det]:.1f})")
