"""The localizer's check that what it found is a thoracolumbar spine (issue 21): a chest film, a
hand, noise and the real radiographs of the DICOM corpus give "no thoracolumbar vertebrae
found" and no box; lateral views (synthetic, and DRRs of real CTs) keep their boxes.

These tests run the bundled network with the run check alone: the bundle's domain guard refuses
most of these images before the check sees them (``tests/localizer/test_guard.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from auditor.io.radiograph import read_radiograph
from auditor.localizer import Localizer, load_localizer
from auditor.localizer.plausible import NOT_TL, RunRules, check_run
from auditor.records import VertebraBox
from auditor.vocab import Level
from tests.helpers import negatives
from tests.helpers.paths import REPO_DIR

SHARED = REPO_DIR.parent / "shared"
CORPUS_XRAY = SHARED / "dicom-corpus" / "xray"
DRR_IMAGES = SHARED / "real-anatomy" / "verse-drr" / "images"


def _run(
    levels: tuple[str, ...],
    confidence: float = 0.9,
    height: float = 40.0,
    step: float = 52.0,
    dx: float = 0.0,
    grow: float = 1.0,
) -> list[VertebraBox]:
    """Boxes of a straight run of bodies, one per level, ``step`` px apart (``dx`` sideways per
    level), each ``grow`` times the height of the one above."""
    boxes = []
    for i, name in enumerate(levels):
        h = height * grow**i
        cx, cy = 200 + dx * i, 100 + step * i
        boxes.append(
            VertebraBox(
                row=i + 1,
                image="",
                sop_instance_uid="",
                level=Level(name),
                x_min=cx - h * 0.6,
                y_min=cy - h / 2,
                x_max=cx + h * 0.6,
                y_max=cy + h / 2,
                source="localizer",
                confidence=confidence,
            )
        )
    return boxes


LUMBAR = ("L1", "L2", "L3", "L4", "L5")


def test_a_straight_confident_run_is_plausible() -> None:
    check = check_run(_run(LUMBAR))
    assert check.plausible, check.failure
    assert check.bodies == 5 and check.missing == 0
    assert check.step_low == pytest.approx(52 / 40)
    # S1 is the sacrum anchor, not a body: it does not count towards the bodies
    assert check_run(_run(("L4", "L5", "S1"))).bodies == 2


@pytest.mark.parametrize(
    ("boxes", "failure"),
    [
        (_run(("L4", "L5")), "fewer than 3"),
        (_run(LUMBAR, confidence=0.45), "mean body score 0.45"),
        (_run(("T10", "T11", "L3", "L4")), "3 levels missing"),
        (_run(LUMBAR, grow=1.8), "differ in size"),
        (_run(LUMBAR, step=150.0), "body heights per level"),
        (_run(LUMBAR, step=10.0), "body heights per level"),
        (_run(LUMBAR, step=5.0, dx=52.0), "degrees off the vertical"),
    ],
    ids=["too-few", "unsure", "gap", "sizes", "far-apart", "overlapping", "horizontal"],
)
def test_implausible_runs_are_refused_with_the_reason(
    boxes: list[VertebraBox], failure: str
) -> None:
    check = check_run(boxes)
    assert not check.plausible
    assert failure in check.failure


def test_rules_can_be_relaxed() -> None:
    boxes = _run(("L4", "L5"))
    assert check_run(boxes, RunRules(min_bodies=2)).plausible


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    """The bundled localizer with the run check and without its domain guard."""
    bundled = load_localizer()
    return Localizer(bundled.net, bundled.card, bundled.path)


@pytest.mark.parametrize(
    "make", [negatives.hand, negatives.chest, negatives.noise], ids=["hand", "chest", "noise"]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_negatives_give_no_thoracolumbar_vertebrae(
    localizer: Localizer, make: Callable[[int], npt.NDArray[np.float32]], seed: int
) -> None:
    result = localizer.locate(make(seed))
    assert result.boxes == ()
    assert result.reason.startswith(NOT_TL)


def test_the_check_is_what_removes_the_boxes_of_a_hand(localizer: Localizer) -> None:
    # without the check the localizer names a hand's phalanx a vertebra; with it, nothing
    unchecked = Localizer(localizer.net, localizer.card, rules=None)
    found = [unchecked.locate(negatives.hand(s)).boxes for s in range(3)]
    assert any(found)
    assert all(localizer.locate(negatives.hand(s)).boxes == () for s in range(3))


def _corpus_radiographs() -> list[Path]:
    return sorted(p for p in CORPUS_XRAY.iterdir() if p.is_file()) if CORPUS_XRAY.is_dir() else []


@pytest.mark.skipif(not CORPUS_XRAY.is_dir(), reason=f"real DICOM corpus absent ({CORPUS_XRAY})")
@pytest.mark.parametrize("path", _corpus_radiographs(), ids=lambda p: p.name)
def test_real_radiographs_without_a_tl_spine_give_no_boxes(
    localizer: Localizer, path: Path
) -> None:
    # chest, hip, tibia, dental and generic DX films: none is a lateral TL spine
    result = localizer.locate(read_radiograph(path).pixels)
    assert result.boxes == ()
    assert result.reason.startswith(NOT_TL)


@pytest.mark.skipif(not DRR_IMAGES.is_dir(), reason=f"real-anatomy DRRs absent ({DRR_IMAGES})")
def test_lateral_drrs_of_real_spines_keep_their_boxes(localizer: Localizer) -> None:
    # read from ../shared only (CC BY-SA; never copied into the repository)
    for path in sorted(DRR_IMAGES.glob("*_LA_*.png")):
        result = localizer.locate(read_radiograph(path).pixels)
        assert len(result.boxes) >= 3, (path.name, result.reason)


@pytest.mark.slow
def test_synthetic_lateral_views_keep_their_boxes(tmp_path: Path) -> None:
    # a world the localizer never saw (seed 2107, used nowhere else), with the guard on as well
    localizer = load_localizer()
    assert localizer.guard is not None
    import csv

    from auditor.synth import SynthConfig, write_archive

    write_archive(
        tmp_path, studies=4, seed=2107, config=SynthConfig(max_side=600, distractor_rate=0.0)
    )
    with (tmp_path / "ground_truth.csv").open(newline="") as fh:
        images = sorted({row["image"] for row in csv.DictReader(fh)})
    for image in images:
        result = localizer.locate(read_radiograph(tmp_path / "archive" / image).pixels)
        assert len(result.boxes) >= 3, (image, result.reason)
