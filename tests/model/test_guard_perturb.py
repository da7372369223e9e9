"""The changes that make images foreign for the domain guards' measures (auditor.model.perturb)."""

from __future__ import annotations

import numpy as np

from auditor.model.perturb import HEAVY_NOISE, inverted, noisy


def test_inversion_turns_the_grey_scale_over_and_leaves_the_input_alone() -> None:
    pixels = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    before = pixels.copy()
    out = inverted(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0 - before)
    np.testing.assert_allclose(inverted(out), before, atol=1e-7)
    np.testing.assert_array_equal(pixels, before)


def test_noise_is_heavy_clipped_and_repeatable_from_its_seed() -> None:
    pixels = np.full((2, 64, 64), 0.5, dtype=np.float32)
    before = pixels.copy()
    out = noisy(pixels, seed=(3, 1, 4))
    assert out.dtype == np.float32 and out.shape == pixels.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert 0.8 * HEAVY_NOISE < float(np.std(out - pixels)) <= HEAVY_NOISE
    np.testing.assert_array_equal(out, noisy(pixels, seed=[3, 1, 4]))
    assert not np.array_equal(out, noisy(pixels, seed=0))
    np.testing.assert_array_equal(pixels, before)
