"""Patient-grouped, class-stratified splits: no patient's vertebrae on both sides of a split.

The source study split vertebra crops without regard to patient, so neighbouring vertebrae of one
radiograph could sit in both training and test sets; these helpers split by group (patient ID, or
study UID when there is none) while keeping the fracture share of each side close to the whole.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedGroupKFold

IndexArray = npt.NDArray[np.int64]


def grouped_kfold(
    labels: npt.ArrayLike, groups: npt.ArrayLike, k: int, seed: int
) -> list[tuple[IndexArray, IndexArray]]:
    """Split into ``k`` (train, validation) index pairs, grouped by ``groups`` and stratified.

    Raises
    ------
    ValueError
        When there are fewer groups than folds, or k < 2.
    """
    y = np.asarray(labels)
    g = np.asarray(groups)
    n_groups = len(np.unique(g))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if n_groups < k:
        raise ValueError(
            f"cannot make {k} patient-grouped folds from {n_groups} patients/studies; "
            "use fewer folds"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64))
        for tr, va in splitter.split(np.zeros(len(y)), y, g)
    ]


def grouped_split(
    labels: npt.ArrayLike, groups: npt.ArrayLike, fraction: float, seed: int
) -> tuple[IndexArray, IndexArray]:
    """Hold out about ``fraction`` of the groups (stratified); return (kept, held_out) indices.

    ``fraction`` 0 holds out nothing.

    Raises
    ------
    ValueError
        When the fraction is outside [0, 0.5] or there are too few groups to hold any out.
    """
    y = np.asarray(labels)
    everything = np.arange(len(y), dtype=np.int64)
    if fraction == 0:
        return everything, np.zeros(0, dtype=np.int64)
    if not 0 < fraction <= 0.5:
        raise ValueError(f"held-out fraction must be in (0, 0.5], got {fraction}")
    k = max(2, round(1.0 / fraction))
    folds = grouped_kfold(y, groups, k, seed)
    return folds[0]


def check_disjoint(groups: npt.ArrayLike, a: IndexArray, b: IndexArray) -> None:
    """Raise AssertionError if a group has members in both ``a`` and ``b`` (a guard, not input
    validation)."""
    g = np.asarray(groups)
    shared = set(g[a].tolist()) & set(g[b].tolist())
    if shared:
        raise AssertionError(f"{len(shared)} patients/studies on both sides of a split")
