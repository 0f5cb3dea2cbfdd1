#!/usr/bin/env python
"""Scanner-space benchmark: detectors on artefacts made another way, per site, beside the metrics.

    python benchmarks/bench_scanner_space.py --models bids_qc/data/models/conv5fc3-ixi-v2.6 [OTHER_MODEL ...] \
        [--data ../shared/data] [--cache /tmp/bids_qc_ss_bench] [--seed 777]

One run prints, for every model given, on the *same* images:

1. **Scanner-space artefacts, held-out subjects and held-out sites.** The model's 20 held-out IXI
   subjects (site ixi-hh, never trained on) and every scan of the sites held out of training
   (default: the United Imaging, the Siemens Prisma and the Siemens 2D scan of ``vendors/``), each
   corrupted on its raw grid by :mod:`bids_qc.evaluation.independent_artefacts` (code that shares
   nothing with either training simulator), written as a NIfTI file and run through the app's
   own preprocessing (registration included) and detectors. Balanced accuracy per detector and
   tier decision, per site, and how often an artefact raises *another* artefact's grade.
2. **The same images beside the metrics** a user would otherwise screen with (AUC of each
   artefact alone vs clean): motion - Tenengrad and the native SNR; noise - the native SNR;
   contrast - ND-WGM.
3. **Clean scans of every site** (the raw files, no artefact): tier and grades, false alarms.
4. **Real motion pairs** (``motion_pairs/``): the slab detector and the native metrics, moving vs
   still (the six detectors cannot judge 20-slice slabs).
5. With ``--own-simulator``: the project's own (training) simulator on the same held-out IXI
   subjects, every model (``bench_heldout.py``'s table, :func:`bids_qc.evaluation.heldout_draw`),
   so the figure that flatters stands beside the ones that do not, in one run.
6. How far the images show the amplitude class they were drawn with: among the moved images,
   the AUC of each image's motion damage (what the motion left, the simulator's record) between
   the amplitude classes, beside the severe detector's (``bench_motion_severity.py``: the same
   question for the training simulators).

Motion is labelled by the damage the image shows (:func:`bids_qc.scanner_space.measured_grades`,
since 2026-12-08); the app's verdict is also reported with motion labelled by the amplitude class
the image was drawn with (the earlier definition, "... motion labelled by amplitude"), so both
readings stand side by side.

The simulated images and their preprocessed model inputs are cached in ``--cache`` (keyed by the
seed), so a second model is scored on the very same inputs without simulating again. Clean scans
finer than 1 mm are first smoothed to 1 mm (memory; the card's figures were made so) unless
``--finest-mm 0``: then every scan stays on its own grid, as the app reads it, which matters for
the slab verdict (the 1 mm smoothing alone moves the shipped slab model's logit on the clean
0.5 mm scan from -5.9 to +1.3; ``bench_slab_sites.py`` simulates on the own grid by default).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bids_qc.config import DEFAULT_MODEL_DIR  # noqa: E402
from bids_qc.evaluation.detector_probabilities import predict  # noqa: E402
from bids_qc.evaluation.heldout_draw import heldout_draw  # noqa: E402
from bids_qc.evaluation.independent_artefacts import draw_image  # noqa: E402
from bids_qc.evaluation.real_motion_pairs import real_pairs as heldout_real_pairs  # noqa: E402
from bids_qc.evaluation.tier_errors import tier_error_causes  # noqa: E402
from bids_qc.grading import binary_labels, tier_from_grades  # noqa: E402
from bids_qc.metrics import metrics_of  # noqa: E402
from bids_qc.models import load_bundle  # noqa: E402
from bids_qc.preprocessing import preprocess  # noqa: E402
from bids_qc.record import ARTEFACTS, DETECTORS  # noqa: E402
from bids_qc.scanner_space import voxel_sizes  # noqa: E402
from bids_qc.slab_detector.detector import load_detector, score_stack  # noqa: E402
from bids_qc.slab_detector.slices import to_float16, to_ras_stack  # noqa: E402
from bids_qc.training.data import GRADE_PROBS, parse_grade_probs  # noqa: E402
from bids_qc.training.metrics import auc, binary_scores  # noqa: E402
from bids_qc.training.scanner_data import (  # noqa: E402
    FINEST_STORED_MM,
    HELDOUT_SITES,
    load_scan_npz,
    prepare_scans,
    shared_data_sources,
)
from bids_qc.verdict import verdict  # noqa: E402

BASELINES = {"motion": (("tenengrad", -1), ("snr_native", -1)),
             "noise": (("snr_native", -1), ("snr", -1), ("wm_snr", -1)),
             "contrast": (("nd_wgm", -1),)}


def sources(data: Path, test_subjects) -> list[tuple[str, str, Path]]:
    """The held-out IXI subjects and every scan of the other sites (held out or not)."""
    test = set(test_subjects)
    return [(n, s, p) for n, s, p in shared_data_sources(data) if s != "ixi-hh" or n in test]


def _metrics(pre) -> dict:
    metrics, _ = metrics_of(pre)
    wm_snr = pre.record.get("wm_snr", {}).get("value")
    return {**{k: float(v) for k, v in metrics.items()}, "wm_snr": np.nan if wm_snr is None else wm_snr}


def make_images(prepared: list[Path], cache: Path, seed: int, n_per_scan: dict,
                probs=GRADE_PROBS) -> list[Path]:
    """Simulate, write, preprocess; cache the model input, metrics and slab stack of each image.

    An image cached by an older version without its slab stack is simulated again (same seed,
    so the same image: its grades must match the cached ones) and only the stack is added."""
    cache.mkdir(parents=True, exist_ok=True)
    done = []
    for k, scan_path in enumerate(prepared):
        scan = load_scan_npz(scan_path)
        n = n_per_scan.get(scan.site, n_per_scan["default"])
        for i in range(n + 1):  # image 0: the clean scan itself
            out = cache / f"{scan.name}-{i:03d}.npz"
            cached = dict(np.load(out)) if out.exists() else None
            if cached is not None and "slab" in cached:
                done.append(out)
                continue
            t = time.perf_counter()
            data, grades, measured, info = draw_image(scan, seed, k, i, probs)
            slab = to_float16(to_ras_stack(data, scan.affine))
            if cached is not None:
                meta = json.loads(str(cached["meta"]))
                if meta["grades"] != (measured or grades):
                    raise RuntimeError(f"{out}: re-simulated grades {measured or grades} differ from "
                                       f"the cached {meta['grades']}")
                np.savez(out, **cached, slab=slab)
                done.append(out)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "scan.nii.gz"
                nib.save(nib.Nifti1Image(data.astype(np.float32), scan.affine), path)
                pre = preprocess(path)
            if pre.model_input is None:
                continue
            np.savez(out, box=pre.scaled.astype(np.float32), slab=slab,
                     meta=json.dumps({"scan": scan.name, "site": scan.site, "index": i,
                                      "asked": grades, "grades": measured or grades,
                                      "info": info, "metrics": _metrics(pre),
                                      "seconds": round(time.perf_counter() - t, 2)}, default=float))
            done.append(out)
            print(f"  {out.name}: {measured or grades} ({time.perf_counter() - t:.1f} s)", flush=True)
    return done


def probabilities(bundle, images: list[Path]) -> list[dict]:
    """Each image's record (cache metadata) with the model's probabilities ``probs``."""
    rows = []
    for path in images:
        with np.load(path) as z:
            # the model box at the reference scale, normalised as this model's manifest says
            # (an older cache holds a min-max input: every normalisation of it gives the same)
            box = z["box"] if "box" in z.files else z["x"]
            meta = json.loads(str(z["meta"]))
        rows.append({**meta, "probs": predict(bundle, bundle.grid.normalise(box.astype(np.float32)))})
    return rows


def voxel_mm_by_scan(prepared: list[Path]) -> dict:
    """``{scan name: voxel sizes (mm)}`` of the prepared clean scans (the images' grids)."""
    out = {}
    for path in prepared:
        with np.load(path) as z:
            out[json.loads(str(z["meta"]))["name"]] = voxel_sizes(z["affine"])
    return out


def slab_scores(folder: Path, images: list[Path], voxel_mm: dict) -> tuple:
    """``(model id, threshold, score of each image, verdict of each image)`` of the slab detector
    in ``folder``; the verdict is the app's (:meth:`SlabDetector.verdict`: None for thick slices)."""
    detector = load_detector(folder)
    scores, verdicts = [], []
    for path in images:
        with np.load(path) as z:
            score = score_stack(detector.net, z["slab"].astype(np.float32))
            scan = json.loads(str(z["meta"]))["scan"]
        scores.append(score)
        verdicts.append(detector.verdict(score, voxel_mm[scan])[0])
    return detector.model_id, detector.threshold, scores, verdicts


def decide(rows: list[dict], thresholds: dict, fuse_noise: bool, slab=None) -> list[dict]:
    """The app's verdict (:func:`bids_qc.verdict.verdict`) on each row: grades ``pred`` and
    ``tier``; ``fuse_noise`` passes the measured white-matter SNR (the app's default), without it
    the noise grade is the detectors' alone; ``slab`` (:func:`slab_scores`) passes each image's
    slab verdict for the motion grade."""
    out = []
    for i, r in enumerate(rows):
        slab_motion = None if slab is None else slab[3][i]
        v = verdict(r["probs"], thresholds, wm_snr=r["metrics"].get("wm_snr") if fuse_noise else None,
                    slab_motion=slab_motion)
        out.append({**r, "pred": v.grades, "tier": v.tier, "true_tier": tier_from_grades(r["grades"])})
    return out


def decision_table(rows: list[dict]) -> dict:
    """Balanced accuracy % per detector and tier decision over ``rows``."""
    out = {}
    true = np.array([[r["grades"][a] for a in ARTEFACTS] for r in rows])
    for det in DETECTORS:
        col = ARTEFACTS.index(det.split("_")[0])
        labels = binary_labels(det, true[:, col].tolist())
        pred = binary_labels(det, [r["pred"][det.split("_")[0]] for r in rows])
        valid = labels >= 0
        if valid.sum() == 0 or len(set(labels[valid])) < 2:
            out[det] = None
            continue
        probs = np.array([r["probs"][det] for r in rows])
        s = binary_scores(labels[valid], pred[valid] >= 1)
        out[det] = {"bacc": 100 * s["balanced_accuracy"], "auc": auc(labels[valid], probs[valid]),
                    "n_pos": int((labels[valid] == 1).sum()), "n_neg": int((labels[valid] == 0).sum())}
    tt = np.array([r["true_tier"] for r in rows])
    pt = np.array([r["tier"] for r in rows])
    for name, pos, among in (("tier_12_vs_3", [3], [1, 2, 3]), ("tier_1_vs_2", [2], [1, 2])):
        keep = np.isin(tt, among)
        if len(set(np.isin(tt[keep], pos))) < 2:
            out[name] = None
            continue
        s = binary_scores(np.isin(tt[keep], pos).astype(int), np.isin(pt[keep], pos))
        out[name] = {"bacc": 100 * s["balanced_accuracy"], "n_pos": int(np.isin(tt[keep], pos).sum()),
                     "n_neg": int((~np.isin(tt[keep], pos)).sum())}
    return out


def cross_talk(rows: list[dict]) -> dict:
    """Per artefact A: among images whose only artefact is A, how often another artefact's grade
    is raised above its true grade (0): any of them (``raised_other_pct``) and each
    (``raised_pct``: which measurement or detector the artefact leaks into)."""
    out = {}
    for a in ARTEFACTS:
        only = [r for r in rows if r["grades"][a] > 0 and all(r["grades"][b] == 0 for b in ARTEFACTS if b != a)]
        if not only:
            continue
        raised = sum(any(r["pred"][b] > 0 for b in ARTEFACTS if b != a) for r in only)
        out[a] = {"n": len(only), "raised_other_pct": 100 * raised / len(only),
                  "raised_pct": {b: 100 * sum(r["pred"][b] > 0 for r in only) / len(only)
                                 for b in ARTEFACTS if b != a}}
    return out


def metric_baselines(rows: list[dict]) -> dict:
    """AUC of each artefact alone vs the clean images: detector (moderate+severe probability,
    max of the two) beside the metrics of ``BASELINES``."""
    out = {}
    clean = [r for r in rows if all(r["grades"][a] == 0 for a in ARTEFACTS)]
    for a in ARTEFACTS:
        only = [r for r in rows if r["grades"][a] > 0 and all(r["grades"][b] == 0 for b in ARTEFACTS if b != a)]
        if not only or not clean:
            continue
        sub = only + clean
        y = np.array([1] * len(only) + [0] * len(clean))
        det = np.array([max(r["probs"][f"{a}_moderate"], r["probs"][f"{a}_severe"]) for r in sub])
        entry = {"n": f"{len(only)}+{len(clean)}", "detector": auc(y, det)}
        for metric, sign in BASELINES[a]:
            vals = np.array([sign * r["metrics"].get(metric, np.nan) for r in sub], float)
            entry[metric] = auc(y[np.isfinite(vals)], vals[np.isfinite(vals)]) if np.isfinite(vals).all() else None
        out[a] = entry
    return out


def _fmt(entry) -> str:
    return "   -  " if entry is None else f"{entry['bacc']:5.1f} "


def site_groups(rows: list[dict], heldout_sites) -> dict[str, list[dict]]:
    """``rows`` split into held-out IXI subjects, held-out sites and the other sites training saw."""
    return {"held-out subjects (ixi-hh)": [r for r in rows if r["site"] == "ixi-hh"],
            "held-out sites": [r for r in rows if r["site"] in heldout_sites],
            "trained-on other sites (new draws)": [r for r in rows
                                                   if r["site"] not in heldout_sites and r["site"] != "ixi-hh"]}


def report(model: str, rows: list[dict], heldout_sites) -> dict:
    simulated = [r for r in rows if r["index"] > 0]
    groups = site_groups(simulated, heldout_sites)
    for site in sorted({r["site"] for r in simulated if r["site"] in heldout_sites}):
        groups[f"  site {site}"] = [r for r in simulated if r["site"] == site]
    tables = {g: decision_table(rs) for g, rs in groups.items() if rs}
    names = list(DETECTORS) + ["tier_12_vs_3", "tier_1_vs_2"]
    print(f"\n== {model}: balanced accuracy % on scanner-space artefacts (independent simulator)")
    print(f"{'images':<38}{'n':>5}  " + " ".join(n.replace('_moderate', '_mod').replace('_severe', '_sev')
                                                .replace('contrast', 'con')[:12].rjust(12) for n in names))
    for g, t in tables.items():
        print(f"{g:<38}{len(groups[g]):>5}  " + " ".join(_fmt(t[n]).rjust(12) for n in names))
    talk = {g: cross_talk(rs) for g, rs in groups.items() if rs and not g.startswith("  ")}
    print("artefact alone -> another artefact's grade raised (% of those images):")
    for g, t in talk.items():
        print(f"  {g:<36}" + "  ".join(
            f"{a} {v['raised_other_pct']:.0f}% (n={v['n']}: "
            + ", ".join(f"{b} {p:.0f}%" for b, p in v["raised_pct"].items()) + ")" for a, v in t.items()))
    causes = {g: tier_error_causes(rs) for g, rs in groups.items() if rs and not g.startswith("  ")}
    print("wrong tiers (of the images) and the grades that made them:")
    for g, c in causes.items():
        print(f"  {g:<36}{c['wrong']}/{c['n']}: " + (", ".join(f"{k} {v}" for k, v in c["causes"].items()) or "-"))
    base = {g: metric_baselines(rs) for g, rs in groups.items() if rs and not g.startswith("  ")}
    print("artefact alone vs clean, AUC: detector beside the metrics (same images):")
    for g, t in base.items():
        for a, e in t.items():
            others = "  ".join(f"{m} {e[m]:.3f}" if e[m] is not None else f"{m} -" for m, _ in BASELINES[a])
            print(f"  {g:<36}{a:<9} n={e['n']:<7} detector {e['detector']:.3f}  {others}")
    clean = [r for r in rows if r["index"] == 0]
    print("clean scans of every site (raw files, no artefact added): tier, grades m/n/c")
    for r in clean:
        g = r["pred"]
        print(f"  {r['site']:<12}{r['scan']:<22} tier {r['tier']}  grades {g['motion']}/{g['noise']}/{g['contrast']}"
              f"  (true by definition {r['grades']['motion']}/{r['grades']['noise']}/{r['grades']['contrast']})")
    other_clean = [r for r in clean if r["site"] != "ixi-hh"]
    summary = {"tables": tables, "cross_talk": talk, "tier_errors": causes, "baselines": base,
               "clean": [{k: r[k] for k in ("site", "scan", "tier", "pred")} for r in clean],
               "clean_other_sites_tier3": sum(r["tier"] == 3 for r in other_clean),
               "clean_other_sites_tier1": sum(r["tier"] == 1 for r in other_clean),
               "n_clean_other_sites": len(other_clean)}
    print(f"clean scans of other sites: {summary['clean_other_sites_tier1']}/{len(other_clean)} tier 1, "
          f"{summary['clean_other_sites_tier3']} tier 3")
    return summary


def severity_shown(rows: list[dict], heldout_sites) -> dict:
    """Per group, among the moved images: AUC of the motion damage itself between the amplitude
    classes (how far what the image shows tells severe from moderate) beside the app's severe
    motion probability, on the same images; and that probability's AUC for the label in use
    (severe by damage)."""
    out = {}
    moved = [r for r in rows if r["index"] > 0 and r["asked"]["motion"]]
    for group, sel in site_groups(moved, heldout_sites).items():
        y = [int(r["asked"]["motion"] == 2) for r in sel]
        if len(set(y)) < 2:
            continue
        severe = [int(r["grades"]["motion"] == 2) for r in sel]  # by damage, the label in use
        p_severe = [r["probs"]["motion_severe"] for r in sel]
        out[group] = {"n": len(sel), "auc_damage": auc(y, [r["info"]["evidence"]["motion_damage"] for r in sel]),
                      "auc_motion_severe": auc(y, p_severe), "n_severe_by_damage": sum(severe),
                      "auc_motion_severe_damage": auc(severe, p_severe) if 0 < sum(severe) < len(sel) else None}
        by_damage = out[group]["auc_motion_severe_damage"]
        print(f"  {group:<36} n={len(sel):<4} severe vs moderate amplitude, AUC: damage "
              f"{out[group]['auc_damage']:.3f}, motion_severe detector {out[group]['auc_motion_severe']:.3f}; "
              f"severe by damage ({sum(severe)}), AUC of the detector: "
              + ("-" if by_damage is None else f"{by_damage:.3f}"))
    return out


def amplitude_labels(rows: list[dict]) -> list[dict]:
    """``rows`` with motion labelled by the amplitude class drawn (``asked``), not the damage
    shown: the definition before 2026-12-08; true tiers follow."""
    out = []
    for r in rows:
        grades = {**r["grades"], "motion": int(r["asked"]["motion"])}
        out.append({**r, "grades": grades, "true_tier": tier_from_grades(grades)})
    return out


def rows_meta(images: list[Path]) -> list[dict]:
    out = []
    for path in images:
        with np.load(path) as z:
            out.append(json.loads(str(z["meta"])))
    return out


def slab_summary(model_id: str, threshold: float, meta: list[dict], scores, verdicts,
                 heldout_sites) -> dict:
    """The slab detector alone on the same images: AUC motion (any grade) vs no motion per group
    (:func:`site_groups`), and how many images without motion its verdict calls "motion" (clean
    scans apart; images without a verdict counted apart), beside Tenengrad."""
    print(f"\n== slab detector {model_id} (threshold {threshold:.3g}) on the same images")
    out = {}
    scored = [{**m, "slab": (s, v)} for m, s, v in zip(meta, scores, verdicts) if s is not None]
    for group, rows in site_groups(scored, heldout_sites).items():
        sel = [(m, *m["slab"]) for m in rows]
        if not sel:
            continue
        moved = [int(m["grades"]["motion"] > 0) for m, _, _ in sel]
        entry = {"n": len(sel), "auc_motion": auc(moved, [s for _, s, _ in sel]),
                 "auc_tenengrad": auc(moved, [-m["metrics"].get("tenengrad", np.nan) for m, _, _ in sel]),
                 "flagged_without_motion": sum(1 for (_, _, v), y in zip(sel, moved) if not y and v),
                 "without_motion": moved.count(0),
                 "found_motion": sum(1 for (_, _, v), y in zip(sel, moved) if y and v),
                 "with_motion": sum(moved),
                 "no_verdict": sum(1 for _, _, v in sel if v is None),
                 "clean_flagged": [m["scan"] for m, _, v in sel if m["index"] == 0 and v]}
        out[group] = entry
        print(f"  {group:<36} n={entry['n']:<4} AUC motion {entry['auc_motion']:.3f} (Tenengrad "
              f"{entry['auc_tenengrad']:.3f}); flags {entry['found_motion']}/{entry['with_motion']} with "
              f"motion, {entry['flagged_without_motion']}/{entry['without_motion']} without, "
              f"{entry['no_verdict']} without a verdict; clean scans "
              f"flagged: {', '.join(entry['clean_flagged']) or 'none'}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", type=Path, default=[DEFAULT_MODEL_DIR])
    p.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bids_qc_ss_bench")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--per-subject", type=int, default=6, help="images per held-out IXI subject")
    p.add_argument("--per-site-scan", type=int, default=14, help="images per scan of another site")
    p.add_argument("--per-trained-site-scan", type=int, default=6,
                   help="images per scan of the other sites that training saw")
    p.add_argument("--heldout-sites", default=",".join(HELDOUT_SITES))
    p.add_argument("--slab-models", nargs="*", type=Path, default=[],
                   help="slab detector folders: each adds a verdict with its motion verdict fused "
                   "(bids_qc.verdict.slab_fused_motion) to the last one")
    p.add_argument("--finest-mm", type=float, default=FINEST_STORED_MM,
                   help="re-sample clean scans with finer voxels to this before simulating (default "
                   "1: as the model card's figures were made, for memory; 0: every scan on its own "
                   "grid, as the app reads it; another value keeps its own scans and images in --cache)")
    p.add_argument("--own-simulator", action="store_true",
                   help="also score every model on the project's own simulator (bench_heldout.py's "
                   "table, its default seed; a few minutes per model)")
    p.add_argument("--probs", default=None,
                   help="P(grade 0, 1, 2) of each artefact, comma-separated (default: the training "
                        f"probabilities {','.join(map(str, GRADE_PROBS))}); e.g. 0.3,0.1,0.6 for a draw with "
                        "enough severe images to decide on them (cached apart from the default draw)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--nprocs", type=int, default=1)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}")
        return 1
    heldout_sites = set(args.heldout_sites.split(","))
    try:
        probs = parse_grade_probs(args.probs)
    except ValueError as exc:
        p.error(f"--probs: {exc}")
    bundles = [load_bundle(m) for m in args.models]
    test_subjects = bundles[0].manifest["training"]["test_subjects"]
    t0 = time.perf_counter()
    src = sources(args.data, test_subjects)
    grid = "" if args.finest_mm == FINEST_STORED_MM else f"_finest-{args.finest_mm:g}"
    prepared = prepare_scans(src, args.cache / f"scans{grid}", args.nprocs, finest_mm=args.finest_mm)
    folder = f"seed-{args.seed}{grid}" + ("" if args.probs is None else "_probs-" + "-".join(map(str, probs)))
    images = make_images(sorted(prepared), args.cache / folder, args.seed,
                         {"ixi-hh": args.per_subject, **{s: args.per_site_scan for s in heldout_sites},
                          "default": args.per_trained_site_scan}, probs)
    print(f"{len(images)} images ready in {time.perf_counter() - t0:.0f} s")
    results = {}
    voxel_mm = voxel_mm_by_scan(prepared)
    slabs = [slab_scores(folder, images, voxel_mm) for folder in args.slab_models]
    for model_id, threshold, scores, verdicts in slabs:
        results[f"slab {model_id}"] = slab_summary(model_id, threshold, rows_meta(images), scores, verdicts,
                                                   heldout_sites)
    for bundle in bundles:
        rows = probabilities(bundle, images)  # once per model: both verdicts read the same
        for fuse in (False, True):
            name = bundle.model_id + (" + measured WM SNR for noise" if fuse else "")
            results[name] = report(name, decide(rows, bundle.thresholds, fuse), heldout_sites)
        for slab in slabs:
            name = f"{bundle.model_id} + measured WM SNR + slab {slab[0]} for motion"
            decided = decide(rows, bundle.thresholds, True, slab)
            results[name] = report(name, decided, heldout_sites)
            name += ", motion labelled by amplitude"
            results[name] = report(name, amplitude_labels(decided), heldout_sites)
        if all("motion_damage" in r["info"].get("evidence", {}) for r in rows if r["asked"]["motion"]):
            print(f"\n== how much of the motion amplitude the images show (moved images; {bundle.model_id})")
            results[f"{bundle.model_id} severity shown"] = severity_shown(rows, heldout_sites)
    pairs = real_pairs(args.data)
    results["real_motion_pairs"] = pairs
    for bundle in bundles if args.own_simulator else []:
        if args.json:  # the scanner-space figures are kept whatever happens next
            args.json.write_text(json.dumps(results, indent=1, default=float))
        print(f"\n== {bundle.model_id}: the project's own simulator (box), held-out IXI subjects ==")
        results[f"{bundle.model_id} own simulator"] = heldout_draw(bundle, args.data, with_real_pairs=False)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


def real_pairs(data: Path) -> dict:
    """The slab detector and native metrics on the real motion pairs (bench_heldout's check)."""
    return heldout_real_pairs(data, load_bundle(DEFAULT_MODEL_DIR))


if __name__ == "__main__":
    raise SystemExit(main())
