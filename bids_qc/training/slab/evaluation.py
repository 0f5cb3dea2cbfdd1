"""Held-out and real-motion evaluation of the slab detector, with the formulas it must beat
(Tenengrad and native SNR, both negated so that higher = worse) on the very same images."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_qc.slab_detector.detector import SlabDetector, score_stack
from bids_qc.slab_detector.slices import SPACING_MM
from bids_qc.training.metrics import auc

CLEAR_MOTION = 1.0  # deg/mm: moved scans at or above this count as "motion" for thresholds
#: amplitude bins (deg/mm): table label, key in the training history, range
BINS = (("all", "auc_all", 1e-9, 99.0), ("< 0.7", "auc_lt_0.7", 1e-9, 0.7),
        ("0.7-1.5", "auc_0.7_1.5", 0.7, 1.5), (">= 1.5", "auc_ge_1.5", 1.5, 99.0))


def auc_by_amplitude(amplitudes, scores) -> dict:
    """``{bin label: AUC}`` of still (amplitude 0) vs moved scans in each amplitude bin."""
    amps, scores = np.asarray(amplitudes, float), np.asarray(scores, float)
    still = amps == 0
    out = {}
    for label, _, lo, hi in BINS:
        sel = still | ((amps >= lo) & (amps < hi))
        out[label] = auc((amps[sel] > 0).astype(int), scores[sel])
    return out


def baseline_formulas(volume: np.ndarray, zooms) -> dict:
    from bids_qc.metrics import MetricUndefined, snr_native, tenengrad

    out = {}
    for name, fn in (("tenengrad", tenengrad), ("snr_native", snr_native)):
        try:
            out[name] = -float(fn(volume, zooms))
        except MetricUndefined:
            out[name] = float("nan")
    return out


def simulated(detector: SlabDetector, stacks) -> dict:
    """Scores of still and moved held-out stacks; AUC per amplitude bin for every score, and the
    detector's sensitivity/specificity at its threshold (still vs moved >= 1 deg/mm)."""
    rows = []
    for s in stacks:
        for amp, stack in s.scans():
            rows.append({"subject": s.subject, "amplitude": amp,
                         "detector": score_stack(detector.net, stack),
                         **baseline_formulas(stack, (SPACING_MM,) * 3)})
    amps = np.array([r["amplitude"] for r in rows])
    table = {score: auc_by_amplitude(amps, [r[score] for r in rows])
             for score in ("detector", "tenengrad", "snr_native")}
    det = np.array([r["detector"] for r in rows])
    clear = amps >= CLEAR_MOTION
    table["at_threshold"] = {"sensitivity_ge_1": float((det[clear] >= detector.threshold).mean()),
                             "specificity": float((det[amps == 0] < detector.threshold).mean()),
                             "n_still": int((amps == 0).sum()), "n_moved": int((amps > 0).sum())}
    return {"table": table, "rows": rows}


def real_pairs(detector: SlabDetector, pairs_dir) -> dict:
    """Every scan of a ``labels.tsv`` (path, participant_id, motion) scored; per score the number
    of subjects whose moving scan scores worse than the still one, and the pooled AUC."""
    pairs_dir = Path(pairs_dir)
    with open(pairs_dir / "labels.tsv", newline="") as fh:
        labels = list(csv.DictReader(fh, delimiter="\t"))
    rows = []
    for row in labels:
        img = nib.load(str(pairs_dir / row["path"]))
        data = np.asarray(img.get_fdata(dtype=np.float32))
        result = detector.assess(data, img.affine)
        rows.append({"path": row["path"], "subject": row["participant_id"],
                     "motion": int(row["motion"]), "detector": result["score"],
                     "verdict": result["motion"],
                     **baseline_formulas(data, img.header.get_zooms()[:3])})
    summary = {}
    for score in ("detector", "tenengrad", "snr_native"):
        by_subject = {}
        for r in rows:
            by_subject.setdefault(r["subject"], {})[r["motion"]] = r[score]
        agree = sum(1 for v in by_subject.values() if 0 in v and 1 in v and v[1] > v[0])
        summary[score] = {"pairs_agree": agree, "pairs": len(by_subject),
                          "auc": auc([r["motion"] for r in rows], [r[score] for r in rows])}
    summary["detector"]["flagged_moving"] = sum(bool(r["verdict"]) for r in rows if r["motion"])
    summary["detector"]["flagged_still"] = sum(bool(r["verdict"]) for r in rows if not r["motion"])
    return {"summary": summary, "rows": rows}


def write_heldout_benchmark(folder, sim: dict | None, real: dict | None, **extra) -> Path:
    """A slab model folder's ``heldout_benchmark.json`` (the model card and tests read it): the
    :func:`simulated` table and the :func:`real_pairs` summary, ``None`` where not run."""
    path = Path(folder) / "heldout_benchmark.json"
    path.write_text(json.dumps({"simulated": sim and sim["table"], "real_pairs": real and real["summary"],
                                **extra}, indent=2) + "\n")
    return path


def format_tables(sim: dict | None, real: dict | None) -> str:
    lines = []
    if sim:
        lines += ["Simulated motion on held-out subjects: AUC still vs moved, by amplitude (deg/mm)", "",
                  "| score | " + " | ".join(b[0] for b in BINS) + " |",
                  "|---|" + "---|" * len(BINS)]
        for score in ("detector", "tenengrad", "snr_native"):
            lines.append(f"| {score} | " + " | ".join(f"{sim['table'][score][b[0]]:.3f}" for b in BINS)
                         + " |")
        t = sim["table"]["at_threshold"]
        lines.append("")
        lines.append(f"detector at its threshold: sensitivity (>= 1 deg/mm) {t['sensitivity_ge_1']:.3f}, "
                     f"specificity {t['specificity']:.3f} ({t['n_still']} still, {t['n_moved']} moved)")
    if real:
        lines += ["", "Real motion pairs: moving scan scores worse than still scan", "",
                  "| score | pairs | AUC |", "|---|---|---|"]
        for score, s in real["summary"].items():
            lines.append(f"| {score} | {s['pairs_agree']}/{s['pairs']} | {s['auc']:.3f} |")
        d = real["summary"]["detector"]
        lines.append("")
        lines.append(f"detector verdict 'motion': {d['flagged_moving']} of the moving scans, "
                     f"{d['flagged_still']} of the still scans")
    return "\n".join(lines)
