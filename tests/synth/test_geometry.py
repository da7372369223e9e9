"""Geometry of generated studies: boxes, level order, heights against grades, zones in boxes."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.synth import SynthConfig, SynthStudy, generate_study, iter_vertebra_crops
from auditor.synth.anatomy import BOXED_LEVELS
from auditor.synth.geometry import clip_polygon, polygon_area
from auditor.synth.shape import genant_grade

SMALL = SynthConfig(max_side=320, fracture_study_rate=0.9, multi_fracture_rate=0.5)
SEED = 20261128


@pytest.fixture(scope="module")
def studies() -> list[SynthStudy]:
    return [generate_study(SEED, i, SMALL) for i in range(12)]


def test_boxes_inside_image_and_ordered_by_level(studies: list[SynthStudy]) -> None:
    for study in studies:
        rows, cols = study.pixels.shape
        assert 4 <= len(study.vertebrae) <= 9
        order = [BOXED_LEVELS.index(v.level) for v in study.vertebrae]
        assert order == sorted(order) and len(set(order)) == len(order)
        for v in study.vertebrae:
            x0, y0, x1, y1 = v.box
            assert 0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows
            assert 0.35 <= v.visible_fraction <= 1.0
            assert v.partial == (v.visible_fraction < 0.97)


def test_boxes_go_down_the_image_with_level(studies: list[SynthStudy]) -> None:
    for study in studies:
        centres = [0.5 * (v.box[1] + v.box[3]) for v in study.vertebrae]
        assert centres == sorted(centres)


def test_heights_match_recorded_grade(studies: list[SynthStudy]) -> None:
    fractured = [v for s in studies for v in s.vertebrae if v.label]
    intact = [v for s in studies for v in s.vertebrae if not v.label]
    assert fractured and intact
    for v in fractured:
        loss = 1.0 - min(v.height_ratio_anterior, v.height_ratio_middle)
        assert v.genant_grade in (1, 2, 3)
        assert (
            genant_grade(loss + 1e-4) == v.genant_grade
            or genant_grade(loss - 1e-4) == v.genant_grade
        )
        assert v.ao_type in ("A1", "A2", "A3", "A4", "B", "C")
        assert not v.partial  # fractures are placed fully inside the field
    for v in intact:
        assert v.genant_grade == 0 and v.ao_type == ""
        assert min(v.height_ratio_anterior, v.height_ratio_middle) > 0.80


def test_fracture_zones_inside_their_boxes(studies: list[SynthStudy]) -> None:
    for study in studies:
        for v in study.vertebrae:
            if not v.label:
                assert v.zone == ()
                continue
            zone = np.asarray(v.zone)
            assert len(zone) >= 3
            x0, y0, x1, y1 = v.box
            assert (zone[:, 0] >= x0 - 0.01).all() and (zone[:, 0] <= x1 + 0.01).all()
            assert (zone[:, 1] >= y0 - 0.01).all() and (zone[:, 1] <= y1 + 0.01).all()
            assert polygon_area(zone) > 0.02 * (x1 - x0) * (y1 - y0)


def test_pixels_are_display_values_bone_bright(studies: list[SynthStudy]) -> None:
    for study in studies:
        p = study.pixels
        assert p.dtype == np.float32 and p.min() >= 0.0 and p.max() <= 1.0
        inside = np.concatenate(
            [
                p[int(v.box[1]) : int(v.box[3]), int(v.box[0]) : int(v.box[2])].ravel()
                for v in study.vertebrae
            ]
        )
        assert float(np.median(inside)) > float(np.median(p))


def test_crops_iterate_without_files() -> None:
    crops = list(iter_vertebra_crops(SEED, range(2), SMALL))
    assert crops
    for crop in crops:
        assert crop.pixels.ndim == 2 and crop.pixels.size > 0
        assert not crop.truth.partial


def test_clip_polygon_to_rectangle() -> None:
    square = np.array([[-1.0, -1.0], [3.0, -1.0], [3.0, 3.0], [-1.0, 3.0]])
    clipped = clip_polygon(square, (0.0, 0.0, 2.0, 2.0))
    assert polygon_area(clipped) == pytest.approx(4.0)
    assert len(clip_polygon(square, (10.0, 10.0, 11.0, 11.0))) == 0
