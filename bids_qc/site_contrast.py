"""Contrast graded against the scan's own scanner (group level): the ND-WGM drop from its site.

The contrast grade is defined by the drop of ND-WGM (``|WM - GM| / (WM + GM)``) an artefact
causes (:data:`bids_qc.scanner_space.CONTRAST_DROP_LIMITS`). A single scan does not carry the
ND-WGM it would have had without the artefact, and clean T1w scans of different scanners differ
far more than a moderate artefact changes them (clean scans of ``../shared/data``: 0.07 on the
Siemens 2D FLASH, 0.10-0.13 on IXI HH, 0.17-0.19 Philips / Prisma, 0.28 studyforrest), so
neither an absolute ND-WGM limit nor detectors trained on one scanner transfer (moderate
contrast ~50 % balanced accuracy on held-out sites, ``bids_qc/data/models/*/MODEL_CARD.md``).
Within one scanner and protocol the spread between healthy subjects is small (IXI HH: robust
SD ~8 %), so at the group level, where many scans of a scanner are seen together, the *median*
ND-WGM of that scanner's scans stands for the clean level and the drop from it is measured:

    drop = 1 - nd_wgm / median(nd_wgm of the scans of the same scanner group)

graded with :data:`SITE_DROP_LIMITS` (moderate from 10 %, severe from 22 %: the definition's
severe limit; the moderate one sits above the between-subject spread, since the definition's
3 % is well inside it). A scanner group is the scans sharing ``site``, manufacturer, model and
field strength (the group table's ``bids_meta`` columns; missing values form their own group);
groups of fewer than :data:`MIN_SITE_SCANS` scans with an ND-WGM get no site grade.

The site grade *replaces* the detectors' contrast grade in ``tier_site`` (it does not add to
it): on held-out IXI subjects with artefacts made in the scanner's space the detectors found
every contrast image but also called many motion and noise images "contrast" (seed 2041: 14 of
57 images without contrast artefact), which the measurement does not
(``benchmarks/SHIPPING_RULE_site_contrast.md``). The median assumes that most scans of a group
have normal contrast; when half or more do not, the drops are underestimated.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bids_qc.grading import grade_from, tier_from_grades
from bids_qc.record import ARTEFACTS

SITE_DROP_LIMITS = (0.10, 0.22)  # drop from the site's median ND-WGM: grade 1, grade 2
MIN_SITE_SCANS = 10
SITE_COLUMNS = ("site", "manufacturer", "manufacturers_model_name", "magnetic_field_strength")


def site_groups(table: pd.DataFrame) -> pd.Series:
    """A scanner-group label per row: the :data:`SITE_COLUMNS` present, joined ("n/a" for a
    missing value), or one group for the whole table when it has none of them."""
    columns = [c for c in SITE_COLUMNS if c in table]
    if not columns:
        return pd.Series("all", index=table.index, dtype="string")
    parts = table[columns].astype("string").fillna("n/a")
    return parts.agg(" | ".join, axis=1).astype("string")


def site_drops(nd_wgm, groups, min_scans: int = MIN_SITE_SCANS) -> tuple[np.ndarray, dict]:
    """``(drop per scan, {group: median ND-WGM})``: the drop from the median of the scans of the
    same group with a finite ND-WGM; NaN where the scan has none or its group has fewer than
    ``min_scans`` such scans (those groups are left out of the dict)."""
    values = pd.to_numeric(pd.Series(np.asarray(nd_wgm, dtype=float)), errors="coerce")
    values = values.where(np.isfinite(values) & (values > 0))
    groups = pd.Series(np.asarray(groups, dtype=object))
    references = {}
    for group, members in values.groupby(groups):
        finite = members.dropna()
        if len(finite) >= min_scans:
            references[group] = float(finite.median())
    reference = groups.map(references).astype(float)
    return (1.0 - values / reference).to_numpy(dtype=float), references


def site_grade(drop: float) -> int | None:
    """0, 1 or 2 by :data:`SITE_DROP_LIMITS`; None for a missing drop."""
    if drop is None or not np.isfinite(drop):
        return None
    return grade_from(float(drop), SITE_DROP_LIMITS, lower_is_worse=False)


def site_tier(grades: dict, contrast_site: int | None) -> int:
    """The tier of ``grades`` (``{artefact: grade}``) with the contrast grade replaced by the site
    grade when there is one."""
    grades = dict(grades)
    if contrast_site is not None:
        grades["contrast"] = contrast_site
    return tier_from_grades(grades)


def add_site_contrast(table: pd.DataFrame, min_scans: int = MIN_SITE_SCANS) -> dict:
    """Add ``nd_wgm_site_drop``, ``grade_contrast_site`` and ``tier_site`` to the group
    ``table`` (ok scans with a tier; others NA) and return the summary: the groups with a
    reference (median ND-WGM, scans), the scans graded, and how many changed tier."""
    ok = (table["status"] == "ok") if "status" in table else pd.Series(True, index=table.index)
    groups = site_groups(table)
    nd = pd.to_numeric(table["nd_wgm"], errors="coerce") if "nd_wgm" in table else \
        pd.Series(np.nan, index=table.index)
    drops, references = site_drops(nd.where(ok), groups.where(ok, "excluded"), min_scans)
    table["nd_wgm_site_drop"] = drops
    site_grades, tiers = [], []
    for i, (_, row) in enumerate(table.iterrows()):
        grade = site_grade(drops[i])
        tier = row.get("tier")
        has_tier = bool(ok.iloc[i]) and not pd.isna(tier)
        site_grades.append(grade if has_tier else None)
        if has_tier and all(not pd.isna(row.get(f"grade_{a}")) for a in ARTEFACTS):
            tiers.append(site_tier({a: int(row[f"grade_{a}"]) for a in ARTEFACTS},
                                   grade))
        else:
            tiers.append(None)
    table["grade_contrast_site"] = pd.array(site_grades, dtype="Int64")
    table["tier_site"] = pd.array(tiers, dtype="Int64")
    graded = table["grade_contrast_site"].notna()
    counts = {str(g): int((table.loc[graded, "grade_contrast_site"] == g).sum()) for g in (0, 1, 2)}
    changed = graded & (table["tier_site"] != table["tier"]).fillna(False)
    return {"limits": list(SITE_DROP_LIMITS), "min_scans": int(min_scans),
            "groups": {str(g): {"median_nd_wgm": ref, "n_scans": int(((groups == g) & nd.notna()
                                                                    & ok).sum())}
                       for g, ref in references.items()},
            "n_graded": int(graded.sum()), "grades": counts, "n_tier_changed": int(changed.sum())}
