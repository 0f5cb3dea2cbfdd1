"""Group level with annotations: fine-tune on a site's ratings, re-score, flag scans for a human.

``run_group_finetuning(config, table)``: validates the ratings, fine-tunes the last three fully
connected layers of each detector with K-fold CV by subject (K = 5 or fewer when there are fewer
subjects), writes ``out_dir/models/<parent>-finetuned-<date>/`` (members = fold heads), re-scores
every scan with the fold ensemble and adds to ``table`` (and rewrites ``group_T1w.tsv``):
``p_<detector>_ft``, ``grade_<artefact>_ft``, ``tier_ft``, ``uncertainty`` and ``needs_review``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bids_qc.annotations import read_annotations
from bids_qc.exceptions import AnnotationError
from bids_qc.grading import binary_labels, tier_from_grades
from bids_qc.model_inputs import load_model_input, model_input_path
from bids_qc.models import DetectorBundle, load_bundle, save_bundle
from bids_qc.preprocessing import preprocess
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.training.evaluate import tier_scores
from bids_qc.training.finetune import cross_validated_finetune
from bids_qc.verdict import assess_volume, verdict

LOGGER = logging.getLogger(__name__)


def model_inputs(config, table: pd.DataFrame, bundle: DetectorBundle) -> dict[str, np.ndarray]:
    """Model-grid input of every ``ok`` scan in ``table``: the participant level's stored
    volume when present, else preprocessed again from the source file."""
    out = {}
    rows = table[table["status"] == "ok"]
    for i, row in enumerate(rows.itertuples(), start=1):
        qc_json = Path(config.output_dir) / str(row.qc_json) if isinstance(row.qc_json, str) else None
        if qc_json is not None:
            stored = load_model_input(model_input_path(qc_json.parent, row.bids_name), bundle.grid)
            if stored is not None:
                out[row.bids_name] = stored
                continue
        source = Path(row.source_file)
        path = source if source.is_absolute() else Path(config.bids_dir) / source
        pre = preprocess(path, grid=bundle.grid, threads=config.omp_nthreads, with_registered=False)
        if pre.model_input is not None:
            out[row.bids_name] = pre.model_input
        LOGGER.info("[%d/%d] preprocessed %s for fine-tuning/re-scoring", i, len(rows), row.bids_name)
    return out


def run_group_finetuning(config, table: pd.DataFrame, k: int = 5, epochs: int = 60,
                         lr: float = 1e-4, seed: int = 0, ratings: pd.DataFrame | None = None) -> dict:
    """``ratings``: :func:`read_annotations` of ``config.annotations`` if already read."""
    t0 = time.perf_counter()
    if ratings is None:
        ratings = read_annotations(config.annotations, table)
    parent = load_bundle(config.model_dir)
    inputs = model_inputs(config, table, parent)
    rated = ratings[ratings["bids_name"].isin(inputs)].reset_index(drop=True)
    if len(rated) < 4:
        raise AnnotationError(config.annotations, f"only {len(rated)} rated scans could be "
                              "preprocessed; fine-tuning needs at least 4")
    subject_of = dict(zip(table["bids_name"], table["subject"].astype(str)))
    subjects = [subject_of[n] for n in rated["bids_name"]]
    k = max(2, min(k, len(set(subjects))))
    volumes = torch.from_numpy(np.stack([inputs[n] for n in rated["bids_name"]]))[:, None]
    members = [dict() for _ in range(k)]
    report, oof = {}, {}
    before_probs = {}
    for det in DETECTORS:
        artefact = det.split("_")[0]
        labels = binary_labels(det, rated[artefact].tolist())
        parent_net = parent.members[0][det]
        if (labels == 0).sum() < 2 or (labels == 1).sum() < 2:
            LOGGER.warning("%s: fewer than 2 rated scans per class; kept the parent weights", det)
            for m in members:
                m[det] = parent_net
            report[det] = {"status": "kept parent (too few ratings per class)",
                           "n_positive": int((labels == 1).sum()), "n_negative": int((labels == 0).sum())}
            continue
        res = cross_validated_finetune(parent_net, volumes, labels, subjects, k=k, seed=seed,
                                       threshold=parent.thresholds[det], epochs=epochs, lr=lr)
        for f, net in enumerate(res["members"]):
            members[f][det] = net
        report[det] = {"status": "fine-tuned", "n_scans": res["n_scans"], "folds": res["folds"],
                       "before": res["before"], "after": res["after"]}
        idx = res["indices"]
        oof[det] = dict(zip(rated["bids_name"].iloc[idx], res["oof_probabilities"]))
        before_probs[det] = dict(zip(rated["bids_name"].iloc[idx], res["before_probabilities"]))
        LOGGER.info("%s: CV balanced accuracy %.3f -> %.3f", det, res["before"]["balanced_accuracy"],
                    res["after"]["balanced_accuracy"])
    tiers = _tier_before_after(rated, table, parent, oof)
    date = _dt.date.today().isoformat()
    folder = Path(config.output_dir) / "models" / f"{parent.model_id}-finetuned-{date}"
    save_bundle(folder, members, model_id=folder.name, trained=True, grid=parent.grid,
                detectors=parent.manifest.get("detectors", {}),
                extra={"parent_model": parent.model_id, "parent_folder": str(parent.folder),
                       "finetuning": {"annotations": str(config.annotations), "n_rated": len(rated),
                                      "n_subjects": len(set(subjects)), "k_folds": k, "epochs": epochs,
                                      "lr": lr, "trained_layers": "last three fully connected",
                                      "batchnorm": "frozen (eval mode)"},
                       "metrics": {"cross_validated": report, "tiers": tiers}})
    tuned = load_bundle(folder)
    _rescore(table, inputs, tuned)
    from bids_qc.outputs import write_table

    write_table(Path(config.output_dir) / "group_T1w.tsv", table)
    summary = {"model_dir": str(folder), "model_id": tuned.model_id, "parent_model": parent.model_id,
               "n_rated": len(rated), "k_folds": k, "detectors": report, "tiers": tiers,
               "n_needs_review": int(table["needs_review"].fillna(False).sum()),
               "seconds": round(time.perf_counter() - t0, 1)}
    LOGGER.info("fine-tuned model -> %s (%.0f s)", folder, summary["seconds"])
    return summary


def _tier_before_after(rated, table, parent, oof) -> dict:
    """Tier decisions on scans rated for all three artefacts, before vs after (out-of-fold)."""
    full = rated.dropna(subset=list(ARTEFACTS))
    if len(full) < 2:
        return {}
    parent_p = table.set_index("bids_name")
    true, before, after = [], [], []
    for row in full.itertuples():
        grades = {a: int(getattr(row, a)) for a in ARTEFACTS}
        true.append(tier_from_grades(grades))
        pb = {d: float(parent_p.loc[row.bids_name, f"p_{d}"]) for d in DETECTORS}
        before.append(verdict(pb, parent.thresholds).tier)
        pa = {d: oof.get(d, {}).get(row.bids_name, pb[d]) for d in DETECTORS}
        after.append(verdict(pa, parent.thresholds).tier)
    true, before, after = map(np.array, (true, before, after))
    return {"n_scans": int(len(true)), "before": tier_scores(true, before),
            "after": tier_scores(true, after)}


def _rescore(table: pd.DataFrame, inputs: dict, bundle: DetectorBundle) -> None:
    """Add the fine-tuned ensemble's verdict on every scan of ``inputs`` to ``table``."""
    verdicts = {name: assess_volume(bundle, inputs[name]) for name in table["bids_name"]
                if name in inputs}

    def column(get):
        return [get(verdicts[n]) if n in verdicts else None for n in table["bids_name"]]

    for d in DETECTORS:
        table[f"p_{d}_ft"] = column(lambda v, d=d: v.probabilities[d])
    for a in ARTEFACTS:
        table[f"grade_{a}_ft"] = pd.array(column(lambda v, a=a: v.grades[a]), dtype="Int64")
    table["tier_ft"] = pd.array(column(lambda v: v.tier), dtype="Int64")
    table["uncertainty"] = column(lambda v: v.uncertainty)
    table["needs_review"] = pd.array(column(lambda v: v.needs_review), dtype="boolean")
