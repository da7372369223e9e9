"""Metrics against hand-computed values (the source study's confusion matrix among them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditor.training.metrics import (
    Confusion,
    auc,
    binary_metrics,
    choose_operating_points,
    format_pct,
    sensitivity_by,
)


def _study_resnet18() -> tuple[np.ndarray, np.ndarray]:
    """Labels and calls reproducing the study's ResNet18 matrix: TN 25, FP 3, FN 3, TP 21."""
    labels = np.array([0] * 28 + [1] * 24)
    called = np.array([0] * 25 + [1] * 3 + [0] * 3 + [1] * 21)
    return labels, called


def test_study_confusion_matrix() -> None:
    labels, called = _study_resnet18()
    c = Confusion.from_predictions(labels, called)
    assert (c.tn, c.fp, c.fn, c.tp) == (25, 3, 3, 21)
    assert c.accuracy == pytest.approx(46 / 52)
    # The paper's text gives sensitivity 89 % and specificity 88 %; its matrix gives 87.5 % and
    # 89.3 %, i.e. the two figures appear swapped in the text. We follow the matrix.
    assert c.sensitivity == pytest.approx(21 / 24)
    assert c.specificity == pytest.approx(25 / 28)
    assert c.ppv == pytest.approx(21 / 24)
    assert c.npv == pytest.approx(25 / 28)
    assert c.as_matrix().tolist() == [[25, 3], [3, 21]]


def test_empty_class_gives_nan_not_error() -> None:
    c = Confusion.from_predictions([0, 0], [0, 1])
    assert math.isnan(c.sensitivity) and c.specificity == 0.5
    assert format_pct(c.sensitivity) == "n/a"
    assert math.isnan(auc([1, 1], [0.2, 0.9]))


def test_auc_hand_computed() -> None:
    # Positive/negative pairs: (0.35 vs 0.1) win, (0.35 vs 0.4) lose, (0.8 vs both) win -> 3/4.
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # A tie counts one half.
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_binary_metrics_point_values_and_ci_bracket_them() -> None:
    labels, called = _study_resnet18()
    scores = np.where(called == 1, 0.9, 0.1).astype(float)
    m = binary_metrics(labels, scores, threshold=0.5)
    assert m.accuracy.value == pytest.approx(46 / 52)
    for est in (m.accuracy, m.sensitivity, m.specificity, m.ppv, m.npv, m.auc):
        assert 0.0 <= est.low <= est.value <= est.high <= 1.0
    assert m.as_dict()["confusion"] == {"tn": 25, "fp": 3, "fn": 3, "tp": 21}


def test_patient_grouping_widens_the_interval_for_correlated_vertebrae() -> None:
    # 10 patients x 5 vertebrae, each patient entirely right or entirely wrong.
    labels = np.tile([1, 0], 25)
    right = np.repeat(np.arange(10) < 7, 5)
    scores = np.where(right, labels, 1 - labels).astype(float)
    groups = np.repeat([f"P{i}" for i in range(10)], 5)
    flat = binary_metrics(labels, scores, 0.5)
    clustered = binary_metrics(labels, scores, 0.5, groups=groups)
    assert clustered.accuracy.value == flat.accuracy.value == pytest.approx(0.7)
    width = lambda e: e.high - e.low  # noqa: E731
    assert width(clustered.accuracy) > width(flat.accuracy)


def test_operating_points_hand_computed() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    points = choose_operating_points(labels, scores, target=0.95)
    bal = points["balanced"]
    # Youden's J: threshold 0.7 -> sens 3/4, spec 4/4 (J 0.75); 0.4 -> sens 1, spec 3/4 (J 0.75);
    # ties go to the higher threshold.
    assert bal.threshold == pytest.approx(0.7)
    assert (bal.sensitivity, bal.specificity) == (0.75, 1.0)
    sens = points["sensitive"]  # highest threshold with every fracture found
    assert sens.threshold == pytest.approx(0.4) and sens.sensitivity == 1.0
    assert sens.specificity == pytest.approx(0.75)
    spec = points["specific"]  # lowest threshold with no false positive
    assert spec.threshold == pytest.approx(0.7) and spec.specificity == 1.0
    # The recorded figures are exactly what the thresholds give.
    for op in points.values():
        c = Confusion.from_predictions(labels, scores >= op.threshold)
        assert (c.sensitivity, c.specificity) == (op.sensitivity, op.specificity)


def test_operating_points_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_operating_points([1, 1], [0.2, 0.3])


def test_sensitivity_by_level() -> None:
    labels = [1, 1, 1, 0, 1]
    called = [1, 0, 1, 1, 1]
    levels = ["T12", "T12", "L1", "L1", "L2"]
    out = sensitivity_by(labels, called, levels)
    assert out == {
        "L1": {"detected": 1, "total": 1, "sensitivity": 1.0},
        "L2": {"detected": 1, "total": 1, "sensitivity": 1.0},
        "T12": {"detected": 1, "total": 2, "sensitivity": 0.5},
    }


def test_sensitive_never_flags_less_and_specific_never_more_than_balanced() -> None:
    # A near-perfect model: Youden's point already finds every fracture at 0.94 specificity...
    labels = np.array([0] * 18 + [1] * 6)
    scores = np.array([0.01 * k for k in range(17)] + [0.5] + [0.45, 0.6, 0.7, 0.8, 0.9, 0.95])
    points = choose_operating_points(labels, scores, target=0.8)
    bal, sens, spec = points["balanced"], points["sensitive"], points["specific"]
    assert bal.threshold == pytest.approx(0.45)
    assert (bal.sensitivity, bal.specificity) == (1.0, pytest.approx(17 / 18))
    # ... so the highest threshold with sensitivity >= 0.8 (0.6) would flag less than balanced,
    # and the lowest with specificity >= 0.8 (0.15) more: both are held at balanced's threshold.
    assert sens.threshold == bal.threshold and sens.sensitivity == 1.0
    assert spec.threshold == bal.threshold and spec.specificity == pytest.approx(17 / 18)
    # where the targets bind, they still order: sensitive <= balanced <= specific
    strict = choose_operating_points(labels, scores, target=0.999)
    assert strict["sensitive"].threshold <= strict["balanced"].threshold
    assert strict["specific"].threshold >= strict["balanced"].threshold
    assert strict["specific"].specificity == 1.0
