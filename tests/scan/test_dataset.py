"""Crop loading: batch packing, one decode per image, and failures that become reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from auditor.model.bundle import ModelCard, load_bundle
from auditor.records import VertebraBox
from auditor.scan.dataset import (
    PREVIEW_SIDE,
    THUMB_SIZE,
    ImageJob,
    VertebraCropDataset,
    collate,
    pack_batches,
)
from auditor.vocab import Level
from tests.helpers.scan_world import LEVELS, make_scan_world


def _box(row: int, level: Level, y0: float, x1: float = 70.0) -> VertebraBox:
    return VertebraBox(row, "x.dcm", "", level, 30.0, y0, x1, y0 + 28.0)


def _job(image: str, n: int) -> ImageJob:
    boxes = tuple(_box(i + 1, Level.L1, 10.0) for i in range(n))
    return ImageJob(image, Path(image), boxes)


def test_pack_batches_keeps_images_whole() -> None:
    jobs = [_job(f"{i}.dcm", n) for i, n in enumerate([4, 4, 3, 9, 1, 2])]
    batches = pack_batches(jobs, 8)
    assert batches == [[0, 1], [2], [3], [4, 5]]
    assert sorted(i for batch in batches for i in batch) == list(range(len(jobs)))
    with pytest.raises(ValueError, match="at least 1"):
        pack_batches(jobs, 0)


@pytest.fixture(scope="module")
def card(bundle: Path) -> ModelCard:
    return load_bundle(bundle).card


def test_item_holds_every_crop_of_an_image(tmp_path: Path, card: ModelCard) -> None:
    world = make_scan_world(tmp_path, n_studies=1)
    path = next(world.archive.rglob("img00.dcm"))
    boxes = tuple(_box(k + 1, Level(level), 12 + 36 * k) for k, level in enumerate(LEVELS))
    bad = VertebraBox(9, "x.dcm", "", Level.L5, 500.0, 500.0, 600.0, 600.0)  # off the image
    item = VertebraCropDataset([ImageJob("img00.dcm", path, (*boxes, bad))], card)[0]
    assert item.error == ""
    assert item.crops.shape == (len(LEVELS), 3, 32, 32)
    assert item.thumbs.shape == (len(LEVELS), THUMB_SIZE, THUMB_SIZE)
    assert item.thumbs.dtype == torch.uint8
    assert [b.row for b in item.boxes] == [1, 2, 3, 4]
    assert [(b.row, "cannot cut the crop" in why) for b, why in item.box_errors] == [(9, True)]
    assert item.preview is not None and max(item.preview.shape) <= PREVIEW_SIDE
    batch = collate([item, item])
    assert batch.n_vertebrae == 2 * len(LEVELS)


def test_undecodable_image_becomes_a_reason(tmp_path: Path, card: ModelCard) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    boxes = (_box(1, Level.L1, 10.0), _box(2, Level.L2, 50.0))
    item = VertebraCropDataset([ImageJob("broken.dcm", broken, boxes)], card)[0]
    assert item.error.startswith("cannot decode the image")
    assert item.crops.shape[0] == 0
    assert [b.row for b, _ in item.box_errors] == [1, 2]
    assert collate([item]).n_vertebrae == 0
