"""MODEL_CARD.md for a model folder, written from its manifest (and a held-out benchmark)."""
from __future__ import annotations

from bids_qc.record import DETECTORS
from bids_qc.training.cache import cache_settings

MOTION_TIMING_TEXT = {
    "torchio": "timed as TorchIO's RandomMotion (evenly spaced in k-space, 0.3-step jitter)",
    "uniform": "at sorted uniform random times in k-space",
    "mixed": "each set of movements timed either as TorchIO's RandomMotion or at sorted uniform "
             "random times in k-space, with probability 1/2",
}

PUBLISHED = {"motion_severe": 100.0, "noise_severe": 97.8, "contrast_severe": 97.6,
             "motion_moderate": 99.5, "noise_moderate": 87.4, "contrast_moderate": 90.2,
             "tier_12_vs_3": 92.0, "tier_1_vs_2": 91.0}


def _pct(value) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def _bacc(scores: dict) -> str:
    ci = scores.get("balanced_accuracy_ci95")
    return _pct(scores["balanced_accuracy"]) + (f" ({_pct(ci[0])}-{_pct(ci[1])})" if ci else "")


def _table(figures: dict) -> list[str]:
    lines = ["| decision | balanced accuracy % | sensitivity % | specificity % | AUC | n+ / n- | published b.acc % |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in list(DETECTORS) + ["tier_12_vs_3", "tier_1_vs_2"]:
        s = figures.get("detectors", {}).get(name) or figures.get("tiers", {}).get(name)
        if not s:
            continue
        auc = s.get("auc")
        lines.append(f"| {name} | {_bacc(s)} | {_pct(s['sensitivity'])} | "
                     f"{_pct(s['specificity'])} | {'' if auc is None else f'{auc:.3f}'} | "
                     f"{s['n_positive']} / {s['n_negative']} | {PUBLISHED[name]:.1f} |")
    return lines


def render_model_card(manifest: dict, heldout: dict | None = None, notes: str = "",
                      draws: dict | None = None, observer: dict | None = None) -> str:
    """``heldout``: a ``bench_heldout.py --json`` file; ``draws``: a ``bench_draws.py --json`` file
    (the same benchmark over several seeds); ``observer``: a ``bench_intensity_observer.py --json``
    file; ``notes``: the Limits section."""
    t = manifest.get("training", {})
    folds = t.get("folds", [])
    lines = [f"# Model card: {manifest['model_id']}", "",
             "Six Conv5FC3 artefact detectors (motion, noise, contrast x moderate, severe) for brain "
             "T1-weighted MRI, used by bids_qc to grade artefacts (0/1/2) and give a quality tier.", "",
             "## Intended use",
             "Screening research or clinical-warehouse T1w scans for motion, noise and poor grey/white "
             "contrast, as a first pass before human review. Not a diagnostic device. Expect to "
             "fine-tune on a few hundred rated scans of your site (`group --annotations`).", "",
             "## Input",
             f"- Geometry: {manifest['input']['shape']} voxels of {manifest['input']['spacing_mm']} mm "
             f"in {manifest['input']['space']} (box origin {manifest['input']['origin_ras_mm']} mm RAS), "
             f"{manifest['input']['normalisation']}; preprocessing version "
             f"{manifest.get('preprocessing_version')} (see `bids_qc/preprocessing.py`).",
             "- Label schemes and thresholds: " + "; ".join(
                 f"{d}: {v['negative']} vs {v['positive']} (threshold {v.get('threshold', 0.5)})"
                 for d, v in manifest.get("detectors", {}).items()), "",
             "## Training",
             f"- Data: `{t.get('data')}`: {t.get('n_scans')} scans of {t.get('n_subjects')} subjects "
             "(IXI, Hammersmith Hospital, Philips 3T; re-sampled to 2 mm and 8 bits by NiChart; "
             "CC BY-SA 3.0). Artefacts simulated with TorchIO on the preprocessed volumes "
             "(`bids_qc/simulation.py`: published ranges; Rician noise; motion 4 movements, "
             + MOTION_TIMING_TEXT[cache_settings(manifest)[1]] + ").",
             f"- Held-out test subjects (never trained or validated on): {len(t.get('test_subjects', []))}; "
             f"cross-validation: {t.get('k_folds')} folds by subject, folds trained: {t.get('folds_trained')}.",
             f"- Each image draws a grade per artefact with P(0, 1, 2) = {t.get('grade_probabilities')}.",
             *([f"- Training images only (not validation or test): bright intensity tail stretched by a "
                f"log-uniform factor in [{t['tail_augment'][0]:g}, {t['tail_augment'][1]:g}]."]
               if t.get("tail_augment") else []),
             *([f"- Training and validation images (not test) of the detectors this command trained: "
                f"clip level of the normalisation moved to a log-uniform factor in "
                f"[{t['clip_augment'][0]:g}, {t['clip_augment'][1]:g}] of the 99.5th percentile."]
               if t.get("clip_augment") else []),
             f"- {t.get('optimizer')}, lr {t.get('lr')}, batch {t.get('batch_size')}, {t.get('loss')}, "
             f"{t.get('selection')}; {t.get('samples_per_subject_per_epoch')} samples per subject per epoch, "
             f"at most {t.get('epochs_max')} epochs / {t.get('max_minutes_per_fold')} min per fold; "
             f"{t.get('threads')} CPU threads; total {t.get('minutes_total')} min on a shared 2-core CPU.",
             f"- Seed {manifest.get('seed')}. Exact command:", "", "```", manifest.get("command", ""), "```", ""]
    cal = t.get("calibration")
    if cal:
        lines += ["- Decision thresholds: " + cal["method"] + (
                  "; command:" if cal.get("command") else "."), ""]
        if cal.get("command"):
            lines += ["```", cal["command"], "```", ""]
        youden = all("youden_threshold" in c for c in cal["detectors"].values())
        lines += _md_table(["detector", "threshold", *(["Youden point"] if youden else []),
                            "val b.acc % at 0.5", "val b.acc % at threshold", "n"],
                           [[d, f"{c['threshold']:.3f}", *([f"{c['youden_threshold']:.3f}"] if youden else []),
                             _pct(c["val_balanced_accuracy_at_0.5"]), _pct(c["val_balanced_accuracy"]),
                             str(c["n_images"])] for d, c in cal["detectors"].items()])
        lines.append("")
    for f in folds:
        best = f.get("best_epoch", {})
        lines.append(f"- Fold {f['fold']}: {len(f['train_subjects'])} train / {len(f['val_subjects'])} val "
                     f"subjects, {f['minutes']} min, best epochs {best}"
                     + (" (0: the starting weights were kept)." if 0 in best.values() else "."))
    if folds:
        lines += ["", "Validation (fold, lowest-loss epoch):", "",
                  "| detector | val b.acc % | val loss |", "| --- | --- | --- |"]
        for d, v in folds[0].get("val_at_best", {}).items():
            lines.append(f"| {d} | {_pct(v.get('val_balanced_accuracy'))} | {v.get('val_loss', float('nan')):.3f} |")
    test = manifest.get("metrics", {}).get("heldout_simulated")
    if test:
        lines += ["", f"## Held-out subjects, simulated artefacts (training run, {test['n_images']} images, "
                  "cached motion variants)", ""] + _table(test)
    at_half = manifest.get("metrics", {}).get("heldout_simulated_at_0.5")
    if at_half:
        lines += ["", "The same images with every threshold at 0.5 (before calibration):", ""] + _table(at_half)
    if heldout:
        draw = "".join(f", {label} {heldout[key]}" for key, label in
                       (("seed", "seed"), ("motion_timing", "motion timing")) if key in heldout)
        lines += ["", f"## Held-out subjects, re-simulated from the raw scans (`benchmarks/bench_heldout.py`, "
                  f"{heldout['n_images']} images{draw})", ""] + _table(heldout)
        if any("balanced_accuracy_ci95" in s for s in heldout.get("detectors", {}).values()):
            lines += ["", f"In parentheses: 95 % interval of the balanced accuracy, percentile bootstrap "
                          f"resampling the {heldout['n_subjects']} held-out subjects (their images are "
                          "not independent)."]
        lines += _threshold_bound_lines(heldout.get("detectors", {}))
        lines += _vs_clean_lines(heldout.get("artefact_vs_clean"))
        lines += _bright_tail_lines(heldout.get("bright_tail"))
        lines += _clip_level_lines(heldout.get("clip_level"))
    lines += _draws_lines(draws)
    lines += _observer_lines(observer)
    rp = (heldout or {}).get("real_motion_pairs")
    if rp:
        lines += ["", "## Real motion (motion_pairs, 6 subjects)", "",
                  f"- Slabs judged by the detectors: {rp['n_judged_by_detectors']}/{rp['n_slabs']} "
                  "(20-slice slabs: partial coverage, no registration, no verdict).",
                  ] + [f"- {m} reported by the app: moving scan ranked worse in {rp[m + '_pairs']}/6 "
                       f"pairs, AUC {rp[m + '_auc']:.3f}." for m in ("slab_motion_score", "snr_native", "tenengrad")
                       if m + "_pairs" in rp]
    lines += ["", "## Limits", notes or "", "",
              "## Licence",
              "Trained on IXI images (CC BY-SA 3.0, https://brain-development.org/ixi-dataset/): the weights "
              "are a derivative and are shared under CC BY-SA 3.0 with credit to the IXI dataset. "
              "Template: MNI ICBM152 2009a (see `bids_qc/data/TEMPLATE_LICENSE.txt`).", ""]
    return "\n".join(lines)


def _threshold_bound_lines(detectors: dict) -> list[str]:
    """Balanced accuracy at the best threshold for the benchmark's own images (an upper bound)."""
    bound = {d: s for d, s in detectors.items() if "best_threshold_balanced_accuracy" in s}
    if not bound:
        return []
    listed = "; ".join(f"{d} {_pct(s['best_threshold_balanced_accuracy'])} (at {s['best_threshold']:.2f})"
                       for d, s in bound.items())
    return ["", "Balanced accuracy % at the best threshold for these very images, chosen on them, so an "
                f"upper bound rather than a result (below a published figure, no threshold reaches it): {listed}."]


def _vs_clean_lines(vs_clean: dict | None) -> list[str]:
    """Each artefact alone vs clean: detector AUC beside the baseline metric's, same images."""
    if not vs_clean:
        return []
    lines = ["", "Each artefact alone vs clean, on the same held-out images: the detector beside the metric "
             "a user would otherwise screen with (Tenengrad, the bar for motion; ND-WGM; the white "
             "matter's SNR, mean / SD), AUC, metrics oriented so that higher = worse:", ""]
    rows = [[f"{artefact} {name}", v["detector"], f"{v['detector_auc']:.3f}", entry["metric"],
             f"{v['metric_auc']:.3f}", str(v["n"])]
            for artefact, entry in vs_clean.items()
            for name, v in entry.items() if name != "metric"]
    return lines + _md_table(["images", "detector", "detector AUC", "metric", "metric AUC", "n"], rows)


def _bright_tail_lines(bt: dict | None) -> list[str]:
    """Clean held-out scans called positive when only their bright tail is scaled (no artefact)."""
    return _invariance_lines(bt, "Bright-tail invariance: the {n} held-out clean scans, intensities above "
                             "the reference level scaled by {factors} (the excess of the brightest voxels, "
                             "mostly vessels and fat, over that level is multiplied by the factor; no "
                             "artefact)")


def _clip_level_lines(cl: dict | None) -> list[str]:
    """Clean held-out scans called positive when the normalisation's clip level moves (no artefact)."""
    return _invariance_lines(cl, "Clip-level invariance: the {n} held-out clean scans normalised with the "
                             "clip level at {factors} of their 99.5th percentile (the tissue a few per "
                             "cent brighter or darker relative to scalp fat and vessels, as between "
                             "subjects: the IXI white matter varies by 2.6 %; no artefact)")


def _invariance_lines(entry: dict | None, intro: str) -> list[str]:
    """A label-preserving change at several factors: clean scans called positive at each, and the
    mean probability shift between the extremes (``bench_heldout.invariance``)."""
    if not entry:
        return []
    n, factors = entry["n_scans"], entry["factors"]
    text = intro.format(n=n, factors=", ".join(f"x{f:g}" for f in factors))
    lines = ["", text + "; clean scans called positive, and the mean probability shift between the "
             "extremes:", ""]
    return lines + _md_table(["detector", *(f"x{f:g}" for f in factors), "mean abs shift"],
                             [[det, *(f"{k}/{n}" for k in v["positive"]), f"{v['mean_abs_shift']:.3f}"]
                              for det, v in entry["detectors"].items()])


def _draws_lines(draws: dict | None) -> list[str]:
    """Balanced accuracy by benchmark draw and the mean (``benchmarks/bench_draws.py --json``)."""
    if not draws:
        return []
    seeds = draws["seeds"]
    lines = ["", f"## Held-out subjects over {len(seeds)} draws (`benchmarks/bench_draws.py --seeds "
                 f"{' '.join(map(str, seeds))}`, {draws.get('n_images', '?')} images)", "",
             "The benchmark above re-simulated with other seeds: same subjects, other artefacts. One draw "
             "is a small sample (about 50-70 positive images per detector, from 20 subjects), so its "
             "figure depends on which images were drawn; the mean is the steadier figure. "
             "Balanced accuracy %:", ""]
    return lines + _md_table(["decision", *(f"seed {s}" for s in seeds), "mean", "published"],
                             [[name, *(f"{x:.1f}" for x in v["by_draw"]), f"{v['mean']:.1f}",
                               f"{PUBLISHED.get(name, float('nan')):.1f}"] for name, v in draws["decisions"].items()])


def _observer_lines(observer: dict | None) -> list[str]:
    """The networks beside an intensity-distribution classifier on the same held-out images
    (``benchmarks/bench_intensity_observer.py --json``)."""
    if not observer:
        return []
    seeds = ",".join(map(str, observer["seeds"]))
    lines = ["", f"## The networks beside an intensity observer (`benchmarks/bench_intensity_observer.py "
                 f"--seeds {seeds}`, {observer['n_test_images']} held-out images)", "",
             "A logistic regression on 36 numbers describing the intensity distribution of the network "
             f"input (percentiles in the template brain, the box and a ring around the brain; grey and "
             f"white matter medians), fitted on {observer['n_train_images']} simulated images of the "
             f"{observer['n_train_subjects']} subjects not held out, scored on the held-out draws' images. "
             "A gamma changes only how intensities are distributed, so this is a reference for the "
             "contrast detectors. Balanced accuracy: the network at its threshold, the observer at its "
             "Youden point on its training images.", ""]
    lines += _md_table(["detector", "network AUC", "observer AUC", "mean of both AUC", "network b.acc %",
                        "observer b.acc %"],
                       [[det, f"{v['network_auc']:.3f}", f"{v['observer_auc']:.3f}", f"{v['mean_auc']:.3f}",
                         _pct(v["network_balanced_accuracy"]), _pct(v["observer_balanced_accuracy"])]
                        for det, v in observer["detectors"].items()])
    curve = observer.get("learning_curve")
    if curve:
        lines += ["", "Moderate contrast, the observer's held-out AUC when fitted on n training subjects "
                      "(mean +- SD over random subsets): "
                  + ", ".join(f"{n}: {m:.3f} +- {sd:.3f}" for n, (m, sd) in curve.items()) + "."]
    cm = observer["detectors"].get("contrast_moderate")
    if cm:
        for who in ("network", "observer"):
            e = cm[f"{who}_errors_by_subject"]
            lines += [f"- Moderate-contrast errors of the {who}: {e['total']}, most in "
                      + ", ".join(f"{s} ({n})" for s, n in e["top"]) + "."]
    return lines


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, one line per row."""
    return (["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])
