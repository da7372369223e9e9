"""Patient-grouped splits: no patient's vertebrae on both sides."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.training.cv import check_disjoint, grouped_kfold, grouped_split


def _data(
    n_patients: int = 30, per_patient: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], per_patient)
    labels = (rng.random(len(groups)) < 0.3).astype(int)
    return labels, groups


def test_kfold_keeps_patients_on_one_side_and_covers_everything() -> None:
    labels, groups = _data()
    folds = grouped_kfold(labels, groups, k=5, seed=3)
    assert len(folds) == 5
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen.tolist()) == list(range(len(labels)))  # each crop validated once
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])
        assert len(tr) + len(va) == len(labels)
        check_disjoint(groups, tr, va)
        # stratified: each validation fold holds both classes
        assert 0 < labels[va].sum() < len(va)


def test_kfold_is_repeatable_by_seed() -> None:
    labels, groups = _data()
    a = grouped_kfold(labels, groups, 4, seed=7)
    b = grouped_kfold(labels, groups, 4, seed=7)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))


def test_split_holds_out_whole_patients() -> None:
    labels, groups = _data(40)
    kept, held = grouped_split(labels, groups, 0.2, seed=0)
    assert not set(groups[kept]) & set(groups[held])
    assert 0.1 < len(held) / len(labels) < 0.3
    everything, none = grouped_split(labels, groups, 0.0, seed=0)
    assert len(everything) == len(labels) and len(none) == 0


def test_too_few_patients_for_the_folds() -> None:
    labels, groups = _data(n_patients=3)
    with pytest.raises(ValueError, match="3 patients"):
        grouped_kfold(labels, groups, k=5, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        grouped_kfold(labels, groups, k=1, seed=0)


def test_check_disjoint_catches_a_leak() -> None:
    groups = np.array(["A", "A", "B"])
    with pytest.raises(AssertionError, match="both sides"):
        check_disjoint(groups, np.array([0]), np.array([1, 2]))
