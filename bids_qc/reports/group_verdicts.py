"""Which verdict the group report shows for each scan: what the app decided.

After group fine-tuning the table holds two verdicts per scan: the shipped model's (``tier``,
``grade_<artefact>``, ``p_<detector>``) and the fine-tuned model's (the same with ``_ft``, and
``model_id_ft``). The fine-tuned one is what the app decided, so the report shows it everywhere
(cards, tier column, charts, queue) and keeps the shipped one as secondary information. The
slab-motion flag is the adopted site threshold's (``slab_motion_site``) if there is one, else
the shipped threshold's (``slab_motion``).
"""
from __future__ import annotations

from bids_qc.record import ARTEFACTS, DETECTORS
from bids_qc.reports.formatting import int_or_none, is_missing, number_or_none, tier_info


def as_bool(value):
    """True/False from a bool or a TSV string; None when missing."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def decision(df, finetune: dict | None) -> dict:
    """``{"fine_tuned", "model", "parent"}``: whether fine-tuned verdicts are shown, the model
    that decided them (``model_id_ft`` of the table, else the fine-tuning summary's ``model_id``)
    and the shipped model they were tuned from."""
    finetune = finetune or {}
    fine_tuned = "tier_ft" in df and df["tier_ft"].notna().any()
    model = ""
    if fine_tuned and "model_id_ft" in df and df["model_id_ft"].notna().any():
        model = str(df["model_id_ft"].dropna().iloc[0])
    model = model or str(finetune.get("model_id") or ("fine-tuned model" if fine_tuned else ""))
    parent = finetune.get("parent_model")
    if not parent and "model_id" in df and df["model_id"].notna().any():
        parent = str(df["model_id"].dropna().iloc[0])
    return {"fine_tuned": bool(fine_tuned), "model": model, "parent": str(parent or "")}


def row_verdict(rec: dict, fine_tuned: bool, model: str, slab_flag: bool | None) -> dict:
    """The verdict a row shows: ``tier`` (tier_info), ``grades``, ``probs``, ``decided_by``
    (the model id), ``shipped`` (the shipped verdict when a fine-tuned one is shown, else
    None), ``changed`` (fine-tuned tier differs from the shipped one), ``slab_flag`` (as
    given: the table's :func:`bids_qc.verdict_counts.slab_flags`) and ``slab_fused`` (the slab
    verdict was read into the motion grade)."""
    shipped = {"tier": tier_info(rec.get("tier")),
               "grades": {a: int_or_none(rec.get(f"grade_{a}")) for a in ARTEFACTS},
               "probs": {d: number_or_none(rec.get(f"p_{d}")) for d in DETECTORS}}
    out = {**shipped, "shipped": None, "changed": False, "slab_flag": slab_flag,
           "slab_fused": as_bool(rec.get("slab_motion_fused")) is True,
           "decided_by": "" if is_missing(rec.get("model_id")) else str(rec.get("model_id"))}
    if not fine_tuned or is_missing(rec.get("tier_ft")):
        return out
    tuned = {"tier": tier_info(rec.get("tier_ft")),
             "grades": {a: int_or_none(rec.get(f"grade_{a}_ft")) for a in ARTEFACTS},
             "probs": {d: number_or_none(rec.get(f"p_{d}_ft")) for d in DETECTORS}}
    decided_by = "" if is_missing(rec.get("model_id_ft")) else str(rec.get("model_id_ft"))
    return {**out, **tuned, "shipped": shipped, "decided_by": decided_by or model,
            "changed": tuned["tier"]["value"] != shipped["tier"]["value"]}


def slab_summary(rows: list[dict], slab_site: dict | None) -> dict:
    """Counts of slab-motion flags over the ok ``rows`` (all, and those without a tier), how many
    scans had the verdict read into their motion grade (``n_fused``), the threshold they use, and
    the site-threshold choice made on the ratings, for the report."""
    ok = [r for r in rows if r["status"] == "ok"]
    no_tier = [r for r in ok if r["tier"]["value"] is None]

    def counts(members):
        return {"motion": sum(r["slab_flag"] is True for r in members),
                "still": sum(r["slab_flag"] is False for r in members),
                "unscored": sum(r["slab_flag"] is None for r in members)}

    site = dict(slab_site or {})
    adopted = bool(site.get("adopted"))
    ba = site.get("balanced_accuracy") or {}
    choice = None
    if site:
        choice = {"status": str(site.get("status", "")), "adopted": adopted,
                  "threshold": number_or_none(site.get("threshold")),
                  "shipped": number_or_none(site.get("shipped_threshold")),
                  "candidate": number_or_none(site.get("site_threshold")),
                  "ba_shipped": number_or_none(ba.get("shipped_threshold")),
                  "ba_site": number_or_none(ba.get("site_threshold_cross_validated")),
                  "n_rated": site.get("n_rated")}
    return {"all": counts(ok), "no_tier": counts(no_tier), "n_no_tier": len(no_tier),
            "n_fused": sum(r["slab_fused"] for r in ok), "n_ok": len(ok),
            "threshold": "site" if adopted else "shipped", "choice": choice}
