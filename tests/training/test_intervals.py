"""Interval functions against hand-computed values, and the minimum-count rule.

The source study's own test set is the fixture for the proportions: ResNet18's confusion matrix
(Sanchez-Rosenberg et al., Fig. 4) is TN 25, FP 3, FN 3, TP 21, i.e. 21 + 3 fractures and 25 + 3
normal vertebrae.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from auditor.training.intervals import (
    TOO_FEW,
    auc_interval,
    clopper_pearson,
    cluster_resamples,
    delong_variance,
    design_effect,
    percentile_interval,
    proportion,
    wilson,
)
from auditor.training.metrics import binary_metrics
from auditor.training.reliability import expected_calibration_error, reliability
from auditor.training.studies import study_level

Z = 1.959963984540054  # the 97.5th percentile of the standard normal


@pytest.fixture
def study_test_set() -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores reproducing the study's ResNet18 test set at a threshold of 0.5."""
    labels = np.array([0] * 28 + [1] * 24)
    called = np.array([0] * 25 + [1] * 3 + [0] * 3 + [1] * 21)
    return labels, np.where(called == 1, 0.9, 0.1)


def test_three_of_three_is_29_to_100_percent_and_too_few() -> None:
    low, high = clopper_pearson(3, 3)
    # hand: the exact lower bound of k = n solves p^n = 0.025, so p = 0.025^(1/3)
    assert low == pytest.approx(0.025 ** (1 / 3), abs=1e-12) and round(100 * low, 1) == 29.2
    assert high == 1.0
    est = proportion([True, True, True])
    assert (est.value, est.low, est.high, est.count, est.total) == (1.0, low, 1.0, 3, 3)
    assert est.too_few
    assert est.percent() == "100.0% (29.2-100.0%), 3/3, too few to estimate"
    assert "(100.0-100.0%)" not in est.percent()


def test_wilson_three_of_three_hand_computed() -> None:
    # (p + z^2/2n - z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) with p = 1, n = 3: 1 / (1 + z^2/3)
    low, high = wilson(3, 3)
    assert low == pytest.approx(1 / (1 + Z**2 / 3), abs=1e-9) and high == pytest.approx(1.0)
    assert round(low, 4) == 0.4385


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (21, 24, 0.6764, 0.9734),
        (25, 28, 0.7177, 0.9773),
        (46, 52, 0.7656, 0.9565),
        (0, 3, 0, 0.7076),
    ],
)
def test_exact_intervals_solve_their_defining_equations(
    k: int, n: int, low: float, high: float
) -> None:
    lo, hi = clopper_pearson(k, n)
    assert (lo, hi) == pytest.approx((low, high), abs=1e-4)
    # Clopper-Pearson: P(X >= k | low) = 0.025 and P(X <= k | high) = 0.025
    if k > 0:
        assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, abs=1e-9)
    if k < n:
        assert binom.cdf(k, n, hi) == pytest.approx(0.025, abs=1e-9)


def test_the_study_test_set(study_test_set: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = study_test_set
    m = binary_metrics(labels, scores, threshold=0.5)
    expected = {
        "sensitivity": (21, 24, 0.6764, 0.9734),
        "specificity": (25, 28, 0.7177, 0.9773),
        "accuracy": (46, 52, 0.7656, 0.9565),
        "ppv": (21, 24, 0.6764, 0.9734),
        "npv": (25, 28, 0.7177, 0.9773),
    }
    for name, (k, n, low, high) in expected.items():
        est = getattr(m, name)
        assert (est.count, est.total) == (k, n), name
        assert est.value == pytest.approx(k / n)
        assert (est.low, est.high) == pytest.approx((low, high), abs=1e-4), name
        assert not est.too_few and est.method == "Clopper-Pearson exact"
    assert m.sensitivity.percent() == "87.5% (67.6-97.3%), 21/24"
    # scores of two values: AUC = (sens + spec) / 2
    assert m.auc.value == pytest.approx((21 / 24 + 25 / 28) / 2)
    assert m.auc.low < m.auc.value < m.auc.high and not m.auc.too_few


def test_three_fractures_of_the_study_set_are_too_few(
    study_test_set: tuple[np.ndarray, np.ndarray],
) -> None:
    labels, scores = study_test_set
    keep = np.r_[0:28, 28:31]  # all 28 normals, the 3 missed fractures
    m = binary_metrics(labels[keep], scores[keep], 0.5)
    assert m.sensitivity.too_few and m.sensitivity.total == 3
    assert m.auc.too_few and m.accuracy.too_few  # fewer than 10 positives
    assert not m.specificity.too_few
    assert m.sensitivity.percent().endswith(TOO_FEW)


def test_delong_hand_computed() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4. V10 = (1/2, 1), V01 = (1, 1/2), AUC 3/4;
    # S10 = S01 = 2 * (1/4)^2 / (2 - 1) = 1/8; var = S10/2 + S01/2 = 1/8
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    auc, var = delong_variance(labels, scores)
    assert auc == pytest.approx(0.75) and var == pytest.approx(0.125)
    est = auc_interval(labels, scores)
    half = Z * math.sqrt(0.125) / (0.75 * 0.25)  # on the logit scale
    centre = math.log(3)
    assert est.low == pytest.approx(1 / (1 + math.exp(-(centre - half))))
    assert est.high == pytest.approx(1 / (1 + math.exp(-(centre + half))))
    assert est.too_few


def test_delong_with_ties_hand_computed() -> None:
    # positives 0.5, 0.7, 0.9; negatives 0.1, 0.5, 0.5 (a tie counts one half).
    # V10 = (2/3, 1, 1), AUC 8/9; V01 = (1, 5/6, 5/6); S10 = (6/81)/2, S01 = (6/324)/2;
    # var = S10/3 + S01/3 = 1/81 + 1/324 = 5/324
    auc, var = delong_variance([0, 0, 0, 1, 1, 1], [0.1, 0.5, 0.5, 0.5, 0.7, 0.9])
    assert auc == pytest.approx(8 / 9) and var == pytest.approx(5 / 324)


def test_clustered_delong_hand_computed() -> None:
    # Obuchowski: patient A holds (negative 0.1, positive 0.8), patient B (0.4, 0.35).
    # Per patient: V10 - m A = (1 - 3/4, 1/2 - 3/4), V01 - n A = (1 - 3/4, 1/2 - 3/4);
    # S10 = S01 = 2/(1 x 2) x 1/8 = 1/8; S11 = 2/1 x (1/16 + 1/16) = 1/4;
    # var = 1/16 + 1/16 + 2 x (1/4) / 4 = 1/4: twice the unclustered 1/8
    labels, scores = [0, 1, 0, 1], [0.1, 0.8, 0.4, 0.35]
    auc, var = delong_variance(labels, scores, ["A", "A", "B", "B"])
    assert auc == pytest.approx(0.75) and var == pytest.approx(0.25)
    # one vertebra per patient is DeLong's own variance
    _, flat = delong_variance(labels, scores)
    _, singletons = delong_variance(labels, scores, ["a", "b", "c", "d"])
    assert singletons == pytest.approx(flat) == pytest.approx(0.125)


def test_perfect_separation_gets_the_exact_pairs_interval() -> None:
    labels = [0] * 12 + [1] * 10
    scores = list(np.linspace(0, 0.4, 12)) + list(np.linspace(0.6, 1, 10))
    est = auc_interval(labels, scores)
    # zero DeLong variance: 10 disjoint pairs, all ordered right: 0.025^(1/10)
    assert est.value == 1.0 and est.high == 1.0
    assert est.low == pytest.approx(0.025 ** (1 / 10))
    assert "disjoint pairs" in est.method and not est.too_few


def test_auc_interval_without_both_classes_is_nan() -> None:
    est = auc_interval([1, 1], [0.2, 0.9])
    assert math.isnan(est.value) and est.too_few


def test_design_effect_hand_computed() -> None:
    # 10 patients x 5 vertebrae, each patient all right (7) or all wrong (3): p = 0.7;
    # clustered: 10/9 x (7 x 1.5^2 + 3 x 3.5^2) = 10/9 x 52.5; independent: 50/49 x 50 x 0.21;
    # ratio = 5 (the cluster size) x (10/9) / (50/49) = 49/9
    right = np.repeat(np.arange(10) < 7, 5)
    patients = np.repeat([f"P{i}" for i in range(10)], 5)
    assert design_effect(right, patients) == pytest.approx(49 / 9)
    clustered = proportion(right, patients)
    flat = proportion(right)
    assert clustered.value == flat.value == pytest.approx(0.7)
    assert clustered.high - clustered.low > flat.high - flat.low
    assert "design effect 5.44" in clustered.method
    # without clustering in the data, the interval is the plain exact one
    assert design_effect(right, [f"v{i}" for i in range(50)]) == 1.0
    assert design_effect([True] * 6, ["A"] * 3 + ["B"] * 3) == 1.0  # p = 1: nothing to see


@pytest.mark.numerics
def test_the_design_effect_interval_is_close_to_a_patient_bootstrap() -> None:
    # 150 patients with 2-6 vertebrae each and a patient-level random effect. The two methods
    # estimate the same clustered variance; with 150 clusters the bootstrap's percentile width
    # varies by a few per cent between seeds, so widths within 15 % of each other agree.
    rng = np.random.default_rng(3)
    sizes = rng.integers(2, 7, 150)
    logit = rng.normal(1.5, 1.0, 150)
    outcomes, patients = [], []
    for i, (size, lp) in enumerate(zip(sizes, logit, strict=True)):
        outcomes += list(rng.random(size) < 1 / (1 + math.exp(-lp)))
        patients += [f"P{i}"] * int(size)
    y = np.array(outcomes)
    est = proportion(y, patients)
    means = [y[idx].mean() for idx in cluster_resamples(patients, len(y), 2000, seed=0)]
    low, high = percentile_interval(means)
    assert design_effect(y, patients) > 1.2  # the clustering is real
    assert (est.high - est.low) == pytest.approx(high - low, rel=0.15)


def test_expected_calibration_error_hand_computed() -> None:
    # one crop per bin: gaps 0.05, 0.05, 0.35, 0.35 -> mean 0.2
    assert expected_calibration_error([0, 1, 1, 0], [0.05, 0.95, 0.65, 0.35]) == pytest.approx(0.2)
    # two crops in bin 6: mean P 0.65, observed 0.5 -> 0.15
    assert expected_calibration_error([1, 0], [0.62, 0.68]) == pytest.approx(0.15)
    rel = reliability([0, 1, 1, 0], [0.05, 0.95, 0.65, 0.35], n_bootstrap=50)
    assert [b.n for b in rel.bins] == [1, 1, 1, 1] and rel.ece.too_few
    assert rel.bins[-1].low == pytest.approx(0.9) and rel.bins[-1].observed == 1.0


def test_study_level_figures_and_workload_hand_computed() -> None:
    # S1: fractured, its fracture called (found). S2: fractured, the fracture missed but an
    # intact vertebra called (flagged, not confirmed, not found). S3: intact, nothing called.
    # S4: intact, one call (a false flag).
    labels = [1, 0, 1, 0, 0, 0, 0, 0]
    called = [1, 0, 0, 1, 0, 0, 1, 0]
    studies = ["S1", "S1", "S2", "S2", "S3", "S3", "S4", "S4"]
    st = study_level(labels, called, studies, studies, threshold=0.5)
    assert (st.n_studies, st.n_fractured) == (4, 2)
    assert (st.sensitivity.count, st.sensitivity.total) == (1, 2)
    assert (st.specificity.count, st.specificity.total) == (1, 2)
    assert st.flags_per_1000.value == pytest.approx(750)
    assert (st.flags_per_1000.count, st.flags_per_1000.total) == (3, 4)
    assert st.confirmed_per_100_flags.value == pytest.approx(100 / 3)
    assert st.false_flags_per_1000_clear.value == pytest.approx(500)
    # the interval scales with the figure
    low, high = clopper_pearson(3, 4)
    assert (st.flags_per_1000.low, st.flags_per_1000.high) == pytest.approx(
        (1000 * low, 1000 * high)
    )
    assert st.flags_per_1000.too_few
