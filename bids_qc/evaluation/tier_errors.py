"""Which grade made each wrong tier: the causes behind a benchmark's tier figures.

A tier is the worst grade (:func:`bids_qc.grading.tier_from_grades`), so a wrong tier always has
a wrong grade behind it, in the direction the tier moved: a tier 3 read as 1 or 2 missed every
grade 2 it had ("severe motion read as 1 or 0"); a tier 3 called on a scan of tier 1 or 2
over-called a grade 2; a tier 2 read as 1 missed its grades 1; a tier 1 read as 2 raised a
grade. One wrong tier can have several causes; each is counted.
"""
from __future__ import annotations

from collections import Counter

from bids_qc.grading import tier_from_grades
from bids_qc.record import ARTEFACTS


def causes(true: dict, pred: dict) -> list[str]:
    """The grades that made ``pred``'s tier differ from ``true``'s (``{artefact: grade}`` each);
    empty when the tiers agree."""
    t, p = tier_from_grades(true), tier_from_grades(pred)
    if t == p:
        return []
    if t == 3:
        return [f"severe {a} missed" for a in ARTEFACTS if true[a] == 2 and pred[a] < 2]
    if p == 3:
        return [f"severe {a} over-called" for a in ARTEFACTS if pred[a] == 2 and true[a] < 2]
    if t == 2:
        return [f"{a} missed" for a in ARTEFACTS if true[a] >= 1 and pred[a] == 0]
    return [f"{a} false alarm" for a in ARTEFACTS if pred[a] >= 1 and true[a] == 0]


def tier_error_causes(rows: list[dict]) -> dict:
    """``{"n", "wrong", "causes": {cause: count}}`` over ``rows`` (each with true ``grades`` and
    predicted ``pred``), causes most frequent first."""
    counts, wrong = Counter(), 0
    for r in rows:
        found = causes(r["grades"], r["pred"])
        wrong += bool(found)
        counts.update(found)
    return {"n": len(rows), "wrong": wrong, "causes": dict(counts.most_common())}
