"""Crop geometry: square window, margin, zero padding at image edges, antialiased resize."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.crops import crop_vertebra, crop_window


def test_window_is_square_with_margin_on_each_side() -> None:
    win = crop_window((100.0, 200.0, 140.0, 220.0), margin=0.25, size=64)
    # Longer side 40, plus 25 % of it on each side -> 60, centred on (120, 210).
    assert win.side == 60
    assert (win.x0, win.y0) == (90, 180)
    assert win.scale == pytest.approx(64 / 60)


def test_crop_without_resize_copies_the_window_exactly() -> None:
    img = np.arange(100 * 100, dtype=np.float32).reshape(100, 100) / 10000.0
    crop = crop_vertebra(img, (40, 40, 60, 60), margin=0.0, size=20)
    np.testing.assert_array_equal(crop, img[40:60, 40:60])


def test_crop_pads_with_zero_outside_the_image() -> None:
    img = np.ones((50, 50), dtype=np.float32)
    # Box at the top-left corner: the window starts at (-5, -5).
    crop = crop_vertebra(img, (0, 0, 10, 10), margin=0.5, size=20)
    assert crop.shape == (20, 20)
    assert np.all(crop[:5, :] == 0.0) and np.all(crop[:, :5] == 0.0)
    assert np.all(crop[5:, 5:] == 1.0)


def test_resize_is_antialiased_and_stays_in_range() -> None:
    img = np.zeros((400, 400), dtype=np.float32)
    img[:, ::2] = 1.0  # one-pixel stripes alias badly without a low-pass filter
    crop = crop_vertebra(img, (0, 0, 400, 400), margin=0.0, size=50)
    assert crop.dtype == np.float32 and crop.shape == (50, 50)
    assert crop.min() >= 0.0 and crop.max() <= 1.0
    assert np.allclose(crop[5:-5, 5:-5], 0.5, atol=0.05)


def test_caller_image_is_not_modified() -> None:
    img = np.random.default_rng(0).random((80, 60), dtype=np.float32)
    before = img.copy()
    crop_vertebra(img, (5, 5, 50, 40), margin=0.2, size=32)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ((10, 10, 10, 20), "degenerate"),
        ((10, 20, 30, 5), "degenerate"),
        ((500, 500, 520, 520), "outside"),
    ],
)
def test_bad_boxes_raise(box: tuple[float, float, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        crop_vertebra(np.zeros((100, 100), np.float32), box, margin=0.1, size=16)


def test_points_map_into_crop_coordinates() -> None:
    win = crop_window((100.0, 100.0, 200.0, 200.0), margin=0.0, size=50)
    pts = win.to_crop([[100.0, 100.0], [200.0, 150.0]])
    np.testing.assert_allclose(pts, [[0.0, 0.0], [50.0, 25.0]])


def test_contrast_stretch_per_crop() -> None:
    from auditor.crops import normalise_crops, stretch_contrast

    rng = np.random.default_rng(0)
    dark = (rng.random((16, 16)) * 0.2 + 0.1).astype(np.float32)
    bright = (rng.random((16, 16)) * 0.2 + 0.7).astype(np.float32)
    crops = np.stack([dark, bright, np.full((16, 16), 0.5, np.float32)])
    before = crops.copy()
    out = stretch_contrast(crops)
    # both exposures end up on the same 0-1 scale; a flat crop becomes zeros
    for i in (0, 1):
        assert out[i].min() == 0.0 and out[i].max() == 1.0
        assert np.percentile(out[i], 50) == pytest.approx(0.5, abs=0.1)
    assert np.all(out[2] == 0.0)
    np.testing.assert_array_equal(crops, before)
    assert normalise_crops(crops, "none") is crops
    with pytest.raises(ValueError, match="unknown crop normalisation"):
        normalise_crops(crops, "clahe")
