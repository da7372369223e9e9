"""A short CPU training run on the stand-in world: it learns, and its bundle finds bodies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.localizer import load_localizer, train_localizer
from auditor.localizer.data import AugmentConfig, CanvasCache, augment_batch
from auditor.localizer.evaluate import EvalItem, evaluate_items
from auditor.localizer.targets import PARTIAL
from auditor.localizer.train import TrainConfig
from tests.helpers.toy_localizer import toy_images

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics


def test_augmented_boxes_stay_on_the_bodies() -> None:
    images = toy_images(4, seed=3)
    cache = CanvasCache.build(images, 160)
    rng = np.random.default_rng(0)
    x, targets = augment_batch(cache, [0, 1, 2, 3], 128, rng, AugmentConfig())
    assert x.shape == (4, 1, 128, 128)
    assert np.isfinite(x.numpy()).all()
    _plain, plain_targets = augment_batch(cache, [0], 128, rng, AugmentConfig(enabled=False))
    # Without augmentation the canvas boxes are the letterboxed truth boxes.
    scale = 128 / max(images[0].pixels.shape)
    np.testing.assert_allclose(plain_targets[0].boxes, images[0].boxes * scale, atol=0.6)
    for t in targets:
        assert ((t.boxes[:, 2] > t.boxes[:, 0]) & (t.boxes[:, 3] > t.boxes[:, 1])).all()
        assert (t.boxes >= -1e-3).all() and (t.boxes <= 128 + 1e-3).all()
        assert set(t.channels.tolist()) <= {0, 1, PARTIAL}


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = CanvasCache.build(toy_images(3, seed=4), 96)
    cache.save(tmp_path / "c.npz")
    back = CanvasCache.load(tmp_path / "c.npz")
    assert len(back) == 3
    for a, b in zip(cache.boxes, back.boxes, strict=True):
        np.testing.assert_allclose(a, b)
    assert [c.tolist() for c in back.classes] == [c.tolist() for c in cache.classes]


@pytest.mark.slow
def test_short_training_run_learns_to_find_bodies(tmp_path: Path) -> None:
    config = TrainConfig(
        working_size=128, cache_size=160, width=8, steps=110, batch_size=8, lr=4e-3, seed=1
    )
    result = train_localizer(toy_images(40, seed=1), tmp_path / "toy-bundle", config)
    assert result.steps == 110
    first, last = result.history[0][1], result.final_loss
    assert last < 0.5 * first

    localizer = load_localizer(result.bundle)
    assert localizer.card.working_size == 128
    test = toy_images(12, seed=99)
    report = evaluate_items(
        localizer,
        (
            EvalItem(f"t{i}", im.pixels, im.boxes, im.levels, im.partial, im.fractured)
            for i, im in enumerate(test)
        ),
    )
    assert report.images == 12
    assert report.recall >= 0.6
    assert report.precision >= 0.6
    # boxes come back in input-image coordinates, not canvas coordinates
    im = test[0]
    found = localizer.locate(im.pixels)
    rows, cols = im.pixels.shape
    for box in found.boxes:
        assert 0 <= box.x_min < box.x_max <= cols and 0 <= box.y_min < box.y_max <= rows
        assert box.source == "localizer" and box.confidence is not None
    levels = [b.level.order for b in found.boxes]
    assert levels == sorted(levels) and len(set(levels)) == len(levels)
