"""Wrong calls of a detector counted by held-out subject, and how concentrated they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def errors_by_subject(y, called, subjects, names) -> dict:
    """{subject: [wrong calls, images]} of one detector, for the subjects with images."""
    wrong = called.astype(int) != y
    return {names[i]: [int(wrong[subjects == i].sum()), int((subjects == i).sum())]
            for i in np.unique(subjects)}


def print_error_concentration(detectors: dict, participants: Path) -> None:
    """Per detector, the share of its errors carried by its worst three subjects (with their age
    when the dataset lists it): concentrated errors point at subjects, not at the epoch chosen."""
    ages = {}
    if participants.is_file():
        import pandas as pd

        table = pd.read_csv(participants, sep="\t")
        if "age" in table:
            ages = {str(r.participant_id).removeprefix("sub-"): r.age for r in table.itertuples()}
    print("\nErrors by subject (worst three: wrong/images, age):")
    for det, s in detectors.items():
        counts = s["errors_by_subject"]
        total = sum(w for w, _ in counts.values())
        worst = sorted(counts.items(), key=lambda kv: -kv[1][0])[:3]
        share = sum(w for _, (w, _) in worst) / total if total else 0.0
        listed = ", ".join(f"{sub} {w}/{n}" + (f" ({ages[sub]:.0f} y)" if sub in ages else "")
                           for sub, (w, n) in worst if w)
        print(f"  {det:<18} {total:>3} errors in {sum(1 for w, _ in counts.values() if w):>2}/"
              f"{len(counts)} subjects; worst three carry {100 * share:.0f} %: {listed or '-'}")
