"""Localizer geometry: letterboxing, boxes back in image coordinates, spine order and levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from auditor.localizer.decode import Detection, decode
from auditor.localizer.geometry import Letterbox, box_iou, normalise
from auditor.localizer.levels import assign_levels, chain_positions, level_class, spine_order
from auditor.localizer.network import HEAT_CHANNELS, N_LEVELS, STRIDE
from auditor.vocab import Level


@pytest.mark.parametrize(("rows", "cols"), [(2400, 1900), (700, 1100), (192, 192), (3001, 17)])
def test_letterbox_round_trip(rows: int, cols: int) -> None:
    lb = Letterbox.fit(rows, cols, 192)
    assert max(lb.content_rows, lb.content_cols) == 192
    boxes = np.array([[0, 0, cols, rows], [cols * 0.2, rows * 0.3, cols * 0.6, rows * 0.5]])
    back = lb.boxes_to_image(lb.boxes_to_canvas(boxes))
    np.testing.assert_allclose(back, boxes, rtol=1e-5, atol=1e-3)


def test_letterbox_places_content_top_left_and_pads_with_zero() -> None:
    pixels = np.ones((300, 150), np.float32)
    lb = Letterbox.fit(300, 150, 100)
    canvas = lb.place(pixels)
    assert canvas.shape == (100, 100)
    assert float(canvas[:, :50].min()) == pytest.approx(1.0)
    assert float(canvas[:, 51:].max()) == 0.0
    with pytest.raises(ValueError, match="fitted to 300 x 150"):
        lb.place(np.ones((10, 10), np.float32))


def test_boxes_to_image_clips_to_the_image() -> None:
    lb = Letterbox.fit(100, 50, 64)
    out = lb.boxes_to_image(np.array([[-5.0, -5.0, 70.0, 70.0]]))
    np.testing.assert_allclose(out[0], [0, 0, 50, 100])


def test_normalise_ignores_padding_and_does_not_mutate() -> None:
    canvas = torch.zeros(8, 8)
    canvas[:, :4] = torch.linspace(0.2, 0.8, 8)[:, None]
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    before = canvas.clone()
    out = normalise(canvas, mask)
    assert torch.equal(canvas, before)
    assert abs(float(out[mask].mean())) < 1e-5
    assert float(out[~mask].max()) == pytest.approx(float(out[mask].min()))


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 1 / 3, 0.0])


def test_decode_maps_a_peak_to_its_box() -> None:
    g = 16
    out = {
        "heat": torch.full((1, len(HEAT_CHANNELS), g, g), -10.0),
        "size": torch.zeros((1, 2, g, g)),
        "offset": torch.zeros((1, 2, g, g)),
        "level": torch.zeros((1, N_LEVELS, g, g)),
    }
    out["heat"][0, 0, 5, 7] = 5.0
    out["size"][0, :, 5, 7] = torch.tensor([math.log(20.0), math.log(12.0)])
    out["offset"][0, :, 5, 7] = torch.tensor([0.5, 0.25])
    dets = decode(out, threshold=0.5)[0]
    assert len(dets) == 1
    cx, cy = (7.5) * STRIDE, (5.25) * STRIDE
    assert dets[0].box == pytest.approx((cx - 10, cy - 6, cx + 10, cy + 6))
    assert dets[0].channel == 0


def _det(cx: float, cy: float, level_class_: int | None = None, channel: int = 0) -> Detection:
    probs = np.full(N_LEVELS, 0.02)
    if level_class_ is not None:
        probs[level_class_] = 1.0
    probs /= probs.sum()
    return Detection((cx - 10, cy - 7, cx + 10, cy + 7), channel, 0.9, tuple(probs.tolist()))


def test_spine_order_follows_a_tilted_spine() -> None:
    angle = math.radians(15)
    pts = np.array(
        [[100 + 20 * i * math.sin(angle), 50 + 20 * i * math.cos(angle)] for i in range(6)]
    )
    shuffled = np.array([3, 0, 5, 1, 4, 2])
    order = spine_order(pts[shuffled])
    assert list(shuffled[order]) == [0, 1, 2, 3, 4, 5]


def test_chain_positions_leave_room_for_a_missed_body() -> None:
    ys = [0, 20, 40, 80, 100]  # the body at 60 was not found
    pos = chain_positions(np.array([[0, y] for y in ys], float))
    assert list(pos) == [0, 1, 2, 4, 5]


def test_levels_count_up_from_the_sacrum() -> None:
    # five bodies and S1; the level head disagrees (says T10 everywhere) but the sacrum wins
    bodies = [_det(100, 40 + 25 * i, level_class_=1) for i in range(5)]
    sacrum = _det(100, 40 + 25 * 5, channel=1)
    got = assign_levels(list(reversed(bodies)), sacrum)
    assert got.anchor == "sacrum"
    names = [got.levels[k] for k in range(5)]
    assert names == [Level.L1, Level.L2, Level.L3, Level.L4, Level.L5]
    assert got.order == (4, 3, 2, 1, 0)


def test_levels_skip_a_missed_body_and_leave_t9_unnamed() -> None:
    ys = [0, 25, 50, 75, 100, 125, 175, 200]  # L3 missing between 125 and 175
    bodies = [_det(100, 40 + y) for y in ys]
    sacrum = _det(100, 40 + 225, channel=1)
    got = assign_levels(bodies, sacrum)
    assert [lv.value if lv else None for lv in got.levels] == [
        None,
        "T10",
        "T11",
        "T12",
        "L1",
        "L2",
        "L4",
        "L5",
    ]


def test_levels_without_sacrum_use_the_level_head() -> None:
    bodies = [_det(100, 40 + 25 * i, level_class_=2 + i) for i in range(5)]  # T11..L3
    got = assign_levels(bodies, None)
    assert [lv.value for lv in got.levels if lv] == ["T11", "T12", "L1", "L2", "L3"]
    assert got.anchor == "rib"
    lumbar = [_det(100, 40 + 25 * i, level_class_=5 + i) for i in range(3)]  # L2..L4
    low = assign_levels(lumbar, None)
    assert low.anchor == "none"
    assert low.confidence < got.confidence


def test_level_class() -> None:
    assert level_class("T10") == 1
    assert level_class("s1") == 9
    assert level_class("T9") == 0
    with pytest.raises(ValueError):
        level_class("C5")
