"""The group report's section on contrast measured against the scanner's own scans
(:mod:`bids_qc.site_contrast`): the reference of each scanner group and the scans whose tier it
changed."""
from __future__ import annotations

from bids_qc.reports.formatting import int_or_none, is_missing, number_or_none


def site_contrast_context(df, rows: list[dict], summary: dict | None) -> dict | None:
    """``{"summary", "groups", "changed"}`` for the template, or None when the table has no site
    columns (a table from before them). ``rows``: the report's rows (same order as ``df``), for
    the links; ``summary``: :func:`bids_qc.site_contrast.add_site_contrast`'s result."""
    if "tier_site" not in df:
        return None
    summary = dict(summary or {})
    groups = [{"name": name, "n": g.get("n_scans"), "median": number_or_none(g.get("median_nd_wgm"))}
              for name, g in sorted((summary.get("groups") or {}).items())]
    changed = []
    for rec, row in zip(df.to_dict("records"), rows):
        tier, site_tier = int_or_none(rec.get("tier")), int_or_none(rec.get("tier_site"))
        if row["status"] != "ok" or site_tier is None or tier == site_tier:
            continue
        changed.append({"bids_name": row["bids_name"], "link": row["link"], "tier": tier,
                        "tier_site": site_tier,
                        "grade": int_or_none(rec.get("grade_contrast")),
                        "grade_site": int_or_none(rec.get("grade_contrast_site")),
                        "drop": None if is_missing(rec.get("nd_wgm_site_drop"))
                        else number_or_none(rec.get("nd_wgm_site_drop"))})
    limits = summary.get("limits") or [None, None]
    return {"n_graded": summary.get("n_graded", sum(
                int_or_none(r) is not None for r in df["grade_contrast_site"])),
            "min_scans": summary.get("min_scans"), "limits": limits, "groups": groups,
            "changed": changed}
