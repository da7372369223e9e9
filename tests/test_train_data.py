"""Labelled crop sets: every usable row cut once, every unusable row counted with a reason."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_factory import make_world

from auditor.errors import InputFileError
from auditor.training.data import AugmentConfig, CropDataset, load_crop_set


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
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == 1
    torch.testing.assert_close(x[0], (torch.from_numpy(before[1]) - 0.5) / 0.25)
    aug = CropDataset(
        crops, np.array([0, 1, 0]), (0.5,) * 3, (0.25,) * 3, AugmentConfig(15, 1.0, 0.1)
    )
    xa, _ = aug[1]
    assert xa.shape == (3, 32, 32) and not torch.equal(xa, x)
    np.testing.assert_array_equal(crops, before)
