"""Labelled crop sets: every usable row cut once, every unusable row counted with a reason."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import InputFileError
from auditor.training.data import AugmentConfig, CropDataset, load_crop_set
from tests.helpers.train_world import make_world


def _append_rows(annotations: Path, rows: list[dict[str, str]]) -> None:
    with annotations.open(newline="") as fh:
        fields = list(csv.DictReader(fh).fieldnames or [])
    with annotations.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=fields).writerows(rows)


def test_crops_records_and_zones(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=4)
    data = load_crop_set(archive, annotations, input_size=32, margin=0.15)
    assert data.crops.shape == (16, 32, 32) and data.crops.dtype == np.float32
    assert data.n_images == 4 and not data.skipped
    assert {r.group for r in data.records} == {"P000", "P001"}
    frac = [r for r in data.records if r.label == 1]
    assert frac and all(r.fracture_zone is not None for r in frac)
    assert all(r.fracture_zone is None for r in data.records if r.label == 0)
    # the wedge's corner lies inside the crop, near its top-left (margin 15 % of 60 px = 9 px)
    zone = frac[0].fracture_zone
    assert zone is not None and np.all((zone >= 0) & (zone <= 32))
    summary = data.summary()
    assert summary["n_crops"] == 16 and sum(summary["by_class"].values()) == 16


def test_bad_rows_are_counted_with_reasons(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=2)
    (archive / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    base = {
        "level": "L3",
        "x_min": "10",
        "y_min": "10",
        "x_max": "50",
        "y_max": "50",
        "label": "fracture",
        "ao_type": "",
        "genant_grade": "",
        "patient_id": "X",
        "study_uid": "",
        "fracture_zone": "",
    }
    _append_rows(
        annotations,
        [
            base | {"image": "studies/s000.png", "label": ""},  # no label
            base | {"image": "nowhere.png"},  # unknown image
            base | {"image": "../escape.png"},  # outside the archive
            base | {"image": "broken.png"},  # unreadable
            base | {"image": "studies/s001.png", "x_min": "500", "x_max": "600"},  # outside image
        ],
    )
    data = load_crop_set(archive, annotations, input_size=32, margin=0.1)
    assert len(data.records) == 8
    reasons = " | ".join(e.reason for e in data.skipped)
    assert len(data.skipped) == 5, reasons
    for needle in ("no label", "not a candidate", "outside the archive", "unreadable", "outside"):
        assert needle in reasons


def test_no_usable_row_is_an_input_error(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=1)
    rows = list(csv.DictReader(annotations.open()))
    for row in rows:
        row["label"] = ""
    with annotations.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(InputFileError, match="no usable labelled vertebra"):
        load_crop_set(archive, annotations, input_size=32, margin=0.1)


def test_zones_from_a_separate_ground_truth_file(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=2)
    rows = list(csv.DictReader(annotations.open()))
    gt = tmp_path / "ground_truth.csv"
    gt.write_text(annotations.read_text())
    for row in rows:
        row.pop("fracture_zone")
    plain = tmp_path / "boxes.csv"
    with plain.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    without = load_crop_set(archive, plain, input_size=32, margin=0.1)
    assert all(r.fracture_zone is None for r in without.records)
    with_gt = load_crop_set(archive, plain, input_size=32, margin=0.1, ground_truth=gt)
    assert any(r.fracture_zone is not None for r in with_gt.records)


def test_dataset_normalises_and_augments_without_touching_the_cache() -> None:
    crops = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    before = crops.copy()
    ds = CropDataset(crops, np.array([0, 1, 0]), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    item = ds[1]
    assert len(item) == 2  # no zones: (image, label)
    x, y = item[0], item[1]
    assert x.shape == (3, 32, 32) and y == 1
    torch.testing.assert_close(x[0], (torch.from_numpy(before[1]) - 0.5) / 0.25)
    aug = CropDataset(
        crops, np.array([0, 1, 0]), (0.5,) * 3, (0.25,) * 3, AugmentConfig(15, 1.0, 0.1)
    )
    xa = aug[1][0]
    assert xa.shape == (3, 32, 32) and not torch.equal(xa, x)
    np.testing.assert_array_equal(crops, before)


def test_jitter_box_moves_each_edge_within_bounds() -> None:
    from auditor.training.data import jitter_box

    rng = np.random.default_rng(0)
    box = (100.0, 200.0, 160.0, 240.0)  # 60 wide, 40 tall
    moved = np.array([jitter_box(box, 0.1, rng) for _ in range(500)])
    delta = moved - np.array(box)
    assert np.all(np.abs(delta[:, [0, 2]]) <= 6.0 + 1e-9)  # 10 % of the width
    assert np.all(np.abs(delta[:, [1, 3]]) <= 4.0 + 1e-9)  # 10 % of the height
    assert np.abs(delta).mean() > 1.0  # and they do move
    assert jitter_box(box, 0.0, rng) == box


def test_jittered_variants_are_cut_per_vertebra_and_repeatable(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=4)
    plain = load_crop_set(archive, annotations, input_size=32, margin=0.15)
    data = load_crop_set(
        archive, annotations, input_size=32, margin=0.15, box_jitter=0.15, jitter_copies=2, seed=4
    )
    again = load_crop_set(
        archive, annotations, input_size=32, margin=0.15, box_jitter=0.15, jitter_copies=2, seed=4
    )
    assert plain.variants is None
    assert data.variants is not None and data.variants.shape == (16, 2, 32, 32)
    np.testing.assert_array_equal(data.crops, plain.crops)  # the originals are untouched
    assert again.variants is not None
    np.testing.assert_array_equal(data.variants, again.variants)
    assert not np.allclose(data.variants[:, 0], data.crops)  # a variant differs from its original
    sub = data.subset([3, 1])
    assert sub.variants is not None
    np.testing.assert_array_equal(sub.variants, data.variants[[3, 1]])

    # training draws originals and variants; without augmentation only originals
    ds = CropDataset(
        data.crops,
        data.labels,
        (0.0,) * 3,
        (1.0,) * 3,
        AugmentConfig(0, 0, 0.001),
        "none",
        variants=data.variants,
    )
    torch.manual_seed(0)
    seen = {
        int(
            np.argmin(
                [
                    float((ds[0][0][0] - c).abs().max())
                    for c in (torch.from_numpy(data.crops[0]), *torch.from_numpy(data.variants[0]))
                ]
            )
        )
        for _ in range(40)
    }
    assert seen == {0, 1, 2}
    plain_ds = CropDataset(
        data.crops, data.labels, (0.0,) * 3, (1.0,) * 3, None, "none", variants=data.variants
    )
    torch.testing.assert_close(plain_ds[0][0][0], torch.from_numpy(data.crops[0]))


def test_zone_mask_counts_pixels_whose_centre_is_inside() -> None:
    from auditor.training.data import zone_mask

    square = np.array([[2.0, 3.0], [6.0, 3.0], [6.0, 5.0], [2.0, 5.0]])  # x 2..6, y 3..5
    mask = zone_mask(square, 8)
    expected = np.zeros((8, 8), bool)
    expected[3:5, 2:6] = True  # rows 3-4, columns 2-5: their centres lie inside
    np.testing.assert_array_equal(mask, expected)


def test_variant_zones_follow_each_jittered_window(tmp_path: Path) -> None:
    from auditor.crops import crop_window
    from auditor.training.data import jitter_box

    archive, annotations = make_world(tmp_path, n_studies=4)
    data = load_crop_set(
        archive, annotations, input_size=32, margin=0.15, box_jitter=0.15, jitter_copies=2, seed=4
    )
    # the jittered boxes are drawn in record order, two per vertebra, from the seed
    rng = np.random.default_rng(4)
    for record in data.records:
        boxes = [jitter_box(record.box, 0.15, rng) for _ in range(2)]
        if record.fracture_zone is None:
            assert record.variant_zones == ()
            continue
        assert len(record.variant_zones) == 2
        # map the original zone back to image pixels, then into each jittered window
        window = crop_window(record.box, 0.15, 32)
        source = record.fracture_zone / window.scale + np.array([window.x0, window.y0])
        for box, zone in zip(boxes, record.variant_zones, strict=True):
            np.testing.assert_allclose(zone, crop_window(box, 0.15, 32).to_crop(source))
        assert not np.allclose(record.variant_zones[0], record.fracture_zone)


def test_zone_masks_go_through_the_same_augmentation_as_the_crop() -> None:
    crops = np.zeros((2, 16, 16), np.float32)
    crops[0, 2:6, 1:4] = 1.0  # a bright patch exactly where crop 0's zone is
    zone = np.array([[1.0, 2.0], [4.0, 2.0], [4.0, 6.0], [1.0, 6.0]])
    ds = CropDataset(
        crops,
        np.array([1, 0]),
        (0.0,) * 3,
        (1.0,) * 3,
        AugmentConfig(rotation=0, flip=1.0, shift=0.2),  # always flipped, randomly shifted
        zones=[(zone,), ()],
    )
    torch.manual_seed(1)
    for _ in range(10):
        item = ds[0]
        assert len(item) == 3  # with zones: (image, label, zone mask)
        x, y, mask = item
        assert y == 1 and mask.shape == (1, 16, 16) and mask.sum() > 0
        # the mask lands on the patch wherever the flip and shift moved it
        torch.testing.assert_close(mask[0], (x[0] > 0.5).float())
    other = ds[1]
    assert len(other) == 3
    _, label, empty = other
    assert label == 0 and empty.shape == (1, 16, 16) and empty.sum() == 0
    with pytest.raises(ValueError, match="zone entries"):
        CropDataset(crops, np.array([1, 0]), (0.0,) * 3, (1.0,) * 3, zones=[()])
    # with two variants per crop, a zone must come for the crop and for each variant
    with pytest.raises(ValueError, match="no zone or 3"):
        CropDataset(
            crops,
            np.array([1, 0]),
            (0.0,) * 3,
            (1.0,) * 3,
            variants=np.zeros((2, 2, 16, 16), np.float32),
            zones=[(zone,), ()],
        )


def test_worker_processes_cut_the_same_crops_and_count_the_same_failures(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path, n_studies=6)
    _append_rows(
        annotations,
        [
            {
                "image": "studies/s001.png",
                "level": "L5",
                "x_min": "500",
                "y_min": "10",
                "x_max": "600",
                "y_max": "50",
                "label": "no_fracture",
                "ao_type": "",
                "genant_grade": "",
                "patient_id": "P001",
                "study_uid": "",
                "fracture_zone": "",
            }
        ],
    )
    options = {"input_size": 32, "margin": 0.15, "box_jitter": 0.15, "jitter_copies": 2, "seed": 3}
    here = load_crop_set(archive, annotations, **options)  # type: ignore[arg-type]
    pooled = load_crop_set(archive, annotations, workers=2, **options)  # type: ignore[arg-type]
    np.testing.assert_array_equal(pooled.crops, here.crops)
    assert pooled.variants is not None and here.variants is not None
    np.testing.assert_array_equal(pooled.variants, here.variants)
    assert pooled.records == here.records
    for a, b in zip(pooled.records, here.records, strict=True):
        assert len(a.variant_zones) == len(b.variant_zones)
        for za, zb in zip(a.variant_zones, b.variant_zones, strict=True):
            np.testing.assert_array_equal(za, zb)
    assert [(e.row, e.reason) for e in pooled.skipped] == [(e.row, e.reason) for e in here.skipped]
    assert len(here.skipped) == 1 and "outside" in here.skipped[0].reason


def test_an_image_gone_after_its_header_was_read_stops_that_image_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, annotations = make_world(tmp_path, n_studies=3)
    import auditor.training.data as data_module

    real_read = data_module.read_radiograph

    def read_or_vanish(path: Path) -> object:
        if path.name == "s001.png":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_read(path)

    monkeypatch.setattr(data_module, "read_radiograph", read_or_vanish)
    data = load_crop_set(archive, annotations, input_size=32, margin=0.15)
    assert data.n_images == 2 and len(data.records) == 8
    assert len(data.skipped) == 4
    assert all(
        e.reason.startswith("unreadable image: cannot read the file (FileNotFoundError")
        for e in data.skipped
    )
