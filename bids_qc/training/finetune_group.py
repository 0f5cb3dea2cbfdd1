"""Group level with annotations: fine-tune on a site's ratings, re-score, flag scans for a human.

Pure: :func:`finetune_on_ratings` takes the group table, the ratings, the model-grid input of each
scan and the parent bundle, and returns the fine-tuned members (with the manifest fields that
describe them), the new table columns and a summary. It reads and writes no file; the group
workflow (:mod:`bids_qc.workflows.group`) gathers the inputs, saves the model folder
``out_dir/models/<parent>-finetuned-<date>/`` and rewrites ``group_T1w.tsv``.

The last three fully connected layers of each detector are fine-tuned with K-fold CV by subject
(K = 5 or fewer when there are fewer subjects; members = fold heads), every scan is re-scored
with the fold ensemble through :mod:`bids_qc.verdict`: columns ``p_<detector>_ft``,
``grade_<artefact>_ft``, ``tier_ft``, ``uncertainty``, and the rating queue of
:mod:`bids_qc.review_priority` (``uncertainty``, ``review_rank``, ``needs_review``: only the
most informative fraction of the scans is flagged, ranked by the entropy of each detector's
decision at its calibrated threshold).

When no detector has at least 2 rated scans per class, nothing is tuned: the result says so
(``tuned`` False, no members, no columns) and no model is written.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from bids_qc.grading import binary_labels, tier_from_grades
from bids_qc.models import DetectorBundle, as_saved
from bids_qc.networks import Conv5FC3
from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.review_priority import review_queue
from bids_qc.training.evaluate import tier_scores
from bids_qc.training.finetune import cross_validated_finetune
from bids_qc.verdict import assess_volume, verdict
from bids_qc.verdict_counts import slab_flags

LOGGER = logging.getLogger(__name__)
MIN_RATED = 4


@dataclass
class FinetuneResult:
    """What :func:`finetune_on_ratings` returns; the caller saves and writes."""

    members: list[dict[str, Conv5FC3]]  # one {detector: net} per fold, as a saved folder holds them
    manifest: dict        # manifest fields for save_bundle(extra=...): parent, finetuning, metrics
    columns: pd.DataFrame  # new columns, index aligned with the table given
    summary: dict         # n_rated, k_folds, detectors, tiers, n_needs_review (or status)

    @property
    def tuned(self) -> bool:
        """Whether any detector was fine-tuned (else there is no model to write)."""
        return bool(self.members)


def finetune_on_ratings(table: pd.DataFrame, ratings: pd.DataFrame, inputs: dict[str, np.ndarray],
                        parent: DetectorBundle, *, annotations: str = "", k: int = 5,
                        epochs: int = 60, lr: float = 1e-4, seed: int = 0) -> FinetuneResult:
    """Fine-tune ``parent`` on the rated scans of ``inputs`` (``{bids_name: (D, H, W) model
    input}``) and re-score every scan of ``table`` that has an input.

    ``ratings``: :func:`bids_qc.annotations.read_annotations` of the file named ``annotations``
    (kept for the record). Raises ``ValueError`` when fewer than 4 rated scans have an input.
    """
    rated = ratings[ratings["bids_name"].isin(inputs)].reset_index(drop=True)
    if len(rated) < MIN_RATED:
        raise ValueError(f"only {len(rated)} rated scans could be preprocessed; fine-tuning needs "
                         f"at least {MIN_RATED}")
    subject_of = dict(zip(table["bids_name"], table["subject"].astype(str)))
    subjects = [subject_of[n] for n in rated["bids_name"]]
    k = max(2, min(k, len(set(subjects))))
    volumes = torch.from_numpy(np.stack([inputs[n] for n in rated["bids_name"]]))[:, None]
    members = [dict() for _ in range(k)]
    report, oof = {}, {}
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
        LOGGER.info("%s: CV balanced accuracy %.3f -> %.3f", det, res["before"]["balanced_accuracy"],
                    res["after"]["balanced_accuracy"])
    if not oof:  # every detector kept its parent weights: a model would change nothing
        status = ("nothing tuned: no detector has 2 rated scans per class; no model written, "
                  "the shipped verdicts stand")
        return FinetuneResult(members=[], manifest={}, columns=pd.DataFrame(index=table.index),
                              summary={"status": status, "n_rated": len(rated), "detectors": report})
    tiers = _tier_before_after(rated, table, parent, oof)
    manifest = {"parent_model": parent.model_id, "parent_folder": str(parent.folder),
                "finetuning": {"annotations": str(annotations), "n_rated": len(rated),
                               "n_subjects": len(set(subjects)), "k_folds": k, "epochs": epochs,
                               "lr": lr, "trained_layers": "last three fully connected",
                               "batchnorm": "frozen (eval mode)"},
                "metrics": {"cross_validated": report, "tiers": tiers}}
    # re-score with the weights as the saved folder will hold them (float16), as before
    members = as_saved(members, parent.grid)
    tuned = DetectorBundle(folder=parent.folder, manifest={**parent.manifest, **manifest},
                           members=members)
    columns = rescore(table, inputs, tuned)
    summary = {"n_rated": len(rated), "k_folds": k, "detectors": report, "tiers": tiers,
               "n_needs_review": int(columns["needs_review"].fillna(False).sum())}
    return FinetuneResult(members=members, manifest=manifest, columns=columns, summary=summary)


def _tier_before_after(rated, table, parent, oof) -> dict:
    """Tier decisions on scans rated for all three artefacts, before vs after (out-of-fold)."""
    full = rated.dropna(subset=list(ARTEFACTS))
    if len(full) < 2:
        return {}
    parent_p = table.set_index("bids_name")
    slabs = _fused_slab_verdicts(table)
    true, before, after = [], [], []
    for row in full.itertuples():
        grades = {a: int(getattr(row, a)) for a in ARTEFACTS}
        true.append(tier_from_grades(grades))
        pb = {d: float(parent_p.loc[row.bids_name, f"p_{d}"]) for d in DETECTORS}
        snr, slab = _wm_snr(parent_p, row.bids_name), slabs.get(row.bids_name)
        before.append(verdict(pb, parent.thresholds, wm_snr=snr, slab_motion=slab).tier)
        pa = {d: oof.get(d, {}).get(row.bids_name, pb[d]) for d in DETECTORS}
        after.append(verdict(pa, parent.thresholds, wm_snr=snr, slab_motion=slab).tier)
    true, before, after = map(np.array, (true, before, after))
    return {"n_scans": int(len(true)), "before": tier_scores(true, before),
            "after": tier_scores(true, after)}


def _wm_snr(by_name: pd.DataFrame, name: str) -> float | None:
    """The scan's measured WM SNR from the group table (``None`` in tables without it)."""
    if "wm_snr" not in by_name:
        return None
    value = by_name.loc[name, "wm_snr"]
    return None if pd.isna(value) else float(value)


def _fused_slab_verdicts(table: pd.DataFrame) -> dict[str, bool]:
    """``{bids_name: slab verdict}`` of the scans whose verdict the app read into the motion grade
    (``slab_motion_fused``, :func:`bids_qc.verdict.slab_verdict_to_fuse`); other scans are absent.
    The verdict is the group level's (:func:`bids_qc.verdict_counts.slab_flags`): the site's own
    threshold's (``slab_motion_site``, set before fine-tuning) when it was adopted, as in the
    group report."""
    if "slab_motion_fused" not in table:
        return {}
    flags, _ = slab_flags(table)
    return {name: bool(flag) for name, fused, flag in zip(table["bids_name"], table["slab_motion_fused"], flags)
            if not pd.isna(fused) and fused and not pd.isna(flag)}


def rescore(table: pd.DataFrame, inputs: dict, bundle: DetectorBundle) -> pd.DataFrame:
    """The verdict of ``bundle`` on every scan of ``table`` with an input, as new columns
    (index aligned with ``table``; missing where a scan has no input)."""
    by_name = table.set_index("bids_name")
    slabs = _fused_slab_verdicts(table)
    verdicts = {name: assess_volume(bundle, inputs[name], wm_snr=_wm_snr(by_name, name),
                                    slab_motion=slabs.get(name))
                for name in table["bids_name"] if name in inputs}

    def column(get):
        return [get(verdicts[n]) if n in verdicts else None for n in table["bids_name"]]

    out = pd.DataFrame(index=table.index)
    for d in DETECTORS:
        out[f"p_{d}_ft"] = column(lambda v, d=d: v.probabilities[d])
    for a in ARTEFACTS:
        out[f"grade_{a}_ft"] = pd.array(column(lambda v, a=a: v.grades[a]), dtype="Int64")
    out["tier_ft"] = pd.array(column(lambda v: v.tier), dtype="Int64")
    out["uncertainty"] = column(lambda v: v.uncertainty)
    queue = review_queue(table["bids_name"], out["uncertainty"].tolist())
    for name in queue:
        out[name] = queue[name].array  # positional: queue follows table["bids_name"]
    return out
