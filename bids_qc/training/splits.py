"""Subject-level splits: a held-out test set and K folds. One subject never sits on both sides."""
from __future__ import annotations

import numpy as np


def holdout_split(subjects, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(pool, test)``: ``n_test`` subjects drawn with ``seed`` from the sorted unique subjects."""
    unique = sorted(set(subjects))
    if n_test >= len(unique):
        raise ValueError(f"cannot hold out {n_test} of {len(unique)} subjects")
    order = np.random.default_rng(seed).permutation(len(unique))
    test = sorted(unique[i] for i in order[:n_test])
    pool = sorted(unique[i] for i in order[n_test:])
    return pool, test


def kfold_by_subject(subjects, k: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """K ``(train, val)`` pairs over unique subjects; every subject is in exactly one val fold."""
    unique = sorted(set(subjects))
    if k < 2 or k > len(unique):
        raise ValueError(f"k={k} folds impossible with {len(unique)} subjects")
    order = np.random.default_rng(seed).permutation(len(unique))
    folds = [sorted(unique[i] for i in order[f::k]) for f in range(k)]
    return [(sorted(s for g, fold in enumerate(folds) if g != f for s in fold), folds[f])
            for f in range(k)]
