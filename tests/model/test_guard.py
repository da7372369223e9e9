"""The domain guard (issue 21): fitting, distances in the scan's forward pass, any precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import BundleError
from auditor.model.bundle import attach_guard, create_untrained_bundle
from auditor.model.guard import FeatureGuard, fit_guard
from auditor.model.infer import Classifier


def test_fit_guard_marks_about_its_quantile_of_held_out_rows_and_far_rows() -> None:
    rng = np.random.default_rng(0)
    scales = np.linspace(0.2, 3.0, 32)  # anisotropic: a Euclidean distance would do worse
    fit = rng.normal(0, 1, (2000, 32)) * scales
    heldout = rng.normal(0, 1, (2000, 32)) * scales
    fresh = rng.normal(0, 1, (4000, 32)) * scales
    # a shift of 16 sd along the narrowest axis only (3.2, about one sd of the widest): far in
    # Mahalanobis terms even after the shrinkage widens that axis, near in Euclid's
    shifted = fresh + np.eye(32)[0] * 16 * 0.2
    guard = fit_guard(fit, heldout, quantile=0.99)
    assert guard.is_out(guard.distances(heldout)).mean() == pytest.approx(0.01, abs=0.002)
    # rows from the same distribution: about 1 % (binomial sd on 4,000 rows: 0.16 %)
    assert guard.is_out(guard.distances(fresh)).mean() == pytest.approx(0.01, abs=0.006)
    assert guard.is_out(guard.distances(shifted)).mean() > 0.9


def test_distances_come_back_in_float32_under_bf16_autocast(tmp_path: Path) -> None:
    folder = create_untrained_bundle(tmp_path / "b", input_size=32)
    rng = np.random.default_rng(1)
    crops = rng.random((24, 32, 32), dtype=np.float32)
    plain = Classifier(attach_guard(folder, None), torch.device("cpu"), precision="fp32")
    features = plain.features(plain.preprocess(crops))
    guarded = attach_guard(folder, fit_guard(features[:16], features[16:]))
    assert isinstance(guarded.card.guard, FeatureGuard)
    expected = guarded.card.guard.distances(features)
    for precision in ("fp32", "bf16"):
        classifier = Classifier(guarded, torch.device("cpu"), precision=precision)
        prediction = classifier.predict(classifier.preprocess(crops), cam=False)
        assert prediction.distances is not None
        assert prediction.distances.dtype == np.float32
        # bf16 features move the distances a little; the distance itself is float32
        tolerance = 1e-4 if precision == "fp32" else 0.1
        np.testing.assert_allclose(prediction.distances, expected, rtol=tolerance)


def test_a_two_part_guard_round_trips_through_the_bundle(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    fit, heldout = rng.normal(1, 1, (300, 512)), rng.normal(1, 1, (100, 512))
    guard = fit_guard(fit, heldout, rng.integers(0, 2, 300))
    assert guard.method == "mahalanobis+l2" and guard.l2_centres is not None
    folder = create_untrained_bundle(tmp_path / "b", input_size=32)
    loaded = attach_guard(folder, guard).card.guard
    assert isinstance(loaded, FeatureGuard) and loaded.method == "mahalanobis+l2"
    assert loaded.scales == pytest.approx(guard.scales)
    probe = rng.normal(1, 1, (50, 512))
    np.testing.assert_allclose(loaded.distances(probe), guard.distances(probe), rtol=1e-5)
    # the raw-only guard still fits and loads as before
    raw = fit_guard(fit, heldout, normalised=False)
    assert raw.method == "mahalanobis" and raw.l2_centres is None
    assert attach_guard(folder, raw).card.guard is not None


def test_a_two_part_guard_without_its_l2_arrays_is_refused() -> None:
    rng = np.random.default_rng(3)
    raw = fit_guard(rng.normal(0, 1, (100, 8)), rng.normal(0, 1, (50, 8)), normalised=False)
    with pytest.raises(BundleError, match="L2 centres"):
        FeatureGuard(raw.centres, raw.covariance, threshold=1.0, method="mahalanobis+l2")
