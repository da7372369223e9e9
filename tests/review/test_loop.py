"""The whole review loop on the bundled sample, in real Chromium.

Scan ``sample_data/`` with the bundled localizer and classifier; in the workbench go through the
flagged queue and decide every vertebra by the sample's ground truth (``studies.csv``): confirm
each planted miss, reject the false flag, move one box, rename one level, add a vertebra the
localizer missed, delete one box, leave one vertebra *unsure*, set every study's verdict; then
``export-annotations`` and check its rows are exactly what was clicked; then ``review-stats``, a
short ``train``, ``evaluate`` and ``calibrate`` on the exported file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.model.bundle import load_bundle
from auditor.records import StudyStatus
from auditor.review.run import ReviewRun, load_run
from auditor.vocab import LEVEL_ORDER
from tests.helpers.paths import SAMPLE_DATA
from tests.review import browser as helpers

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow


runner = CliRunner()
REVIEWER = "qa-alice"
LEVELS = [level.value for level in LEVEL_ORDER]
#: How far the test drags the moved box, in screen pixels.
MOVE_BY = (14.0, 9.0)
#: Fast training options (a smoke run of the loop, not a model).
FAST_TRAIN = [
    "--pretrained", "none", "--input-size", "32", "--epochs", "1", "--lr-grid", "0.001",
    "--batch-grid", "16", "--cv-folds", "2", "--cv-epochs", "1", "--test-fraction", "0.25",
    "--val-fraction", "0.25", "--threads", "1", "--device", "cpu",
]  # fmt: skip


@dataclass(frozen=True)
class Truth:
    """The sample's ground truth for one study (``sample_data/studies.csv``)."""

    fractured: dict[str, str]  # level -> AO type
    planted_misses: frozenset[str]


def _truths() -> dict[str, Truth]:
    truths = {}
    with (SAMPLE_DATA / "studies.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            levels = [lv for lv in row["fractured_levels"].split(";") if lv]
            ao = [a for a in row["ao_types"].split(";") if a]
            truths[row["study_uid"]] = Truth(
                fractured=dict(zip(levels, ao, strict=True)),
                planted_misses=frozenset(lv for lv in row["planted_miss_levels"].split(";") if lv),
            )
    return truths


def _ground_truth_boxes() -> dict[str, list[tuple[str, list[float]]]]:
    boxes: dict[str, list[tuple[str, list[float]]]] = {}
    with (SAMPLE_DATA / "boxes.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            xyxy = [float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
            boxes.setdefault(row["image"], []).append((row["level"], xyxy))
    return boxes


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _missed_vertebra(run: ReviewRun, keys: list[str]) -> tuple[str, str, list[float]]:
    """A whole ground-truth vertebra of a flagged study that the localizer did not box:
    ``(study key, level, box)``."""
    truth_boxes = _ground_truth_boxes()
    for case in (c for c in run.studies if c.key in keys):
        image = case.images[0]
        found = [list(v.box) for v in image.vertebrae]
        present = {v.level.value for v in image.vertebrae}
        for level, xyxy in truth_boxes.get(image.image, []):
            whole = xyxy[1] > 5 and xyxy[3] - xyxy[1] > 60
            if whole and level not in present and all(_iou(xyxy, f) < 0.1 for f in found):
                return case.key, level, xyxy
    raise AssertionError("the localizer boxed every whole vertebra of the flagged studies")


# -- the browser side -------------------------------------------------------------------------

SCREEN_JS = """([x, y]) => {
  const rect = document.getElementById('overlay').getBoundingClientRect();
  const scale = rect.width / document.getElementById('radiograph').naturalWidth;
  return [rect.left + x * scale, rect.top + y * scale, scale];
}"""

BOXES_JS = """() => Array.from(document.querySelectorAll('[data-testid="box"]')).map((g) => {
  const r = g.querySelector('rect.box-rect');
  const x = Number(r.getAttribute('x')), y = Number(r.getAttribute('y'));
  return [g.dataset.box, g.dataset.level,
          [x, y, x + Number(r.getAttribute('width')), y + Number(r.getAttribute('height'))]];
})"""


def _screen(tab: Page, x: float, y: float) -> tuple[float, float, float]:
    sx, sy, scale = tab.evaluate(SCREEN_JS, [x, y])
    return float(sx), float(sy), float(scale)


def _drawn_boxes(tab: Page) -> dict[str, tuple[str, list[float]]]:
    """Box id -> (level, [x0, y0, x1, y1]) as the page draws the boxes now."""
    return {box: (level, xyxy) for box, level, xyxy in tab.evaluate(BOXES_JS)}


def _row(tab: Page, box: str) -> Any:
    return tab.locator(f'[data-testid="vertebra"][data-box="{box}"]')


def _saved(tab: Page) -> None:
    tab.wait_for_selector('[data-testid="save-state"][data-state="saved"]')


def _decide(tab: Page, box: str, decision: str) -> None:
    _row(tab, box).locator(f'[data-testid="decide-{decision}"]').click()
    tab.wait_for_selector(f'[data-testid="vertebra"][data-box="{box}"][data-decision="{decision}"]')


def _drag(tab: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    tab.mouse.move(*start)
    tab.mouse.down()
    tab.mouse.move(*end, steps=4)
    tab.mouse.up()


def _blur(tab: Page) -> None:
    """Take the focus off a control, so that the page's keys reach the case again."""
    tab.evaluate("document.activeElement && document.activeElement.blur()")


@dataclass
class Clicked:
    """What the test did in the browser that the export must show, per (image, box id)."""

    rows: dict[tuple[str, str], dict[str, Any]]
    moved: tuple[str, str, list[float], list[float], float] | None = None
    added: tuple[str, str, list[float], list[float], float] | None = None
    renamed: tuple[str, str, str] | None = None
    deleted: tuple[str, str] | None = None
    unsure: tuple[str, str] | None = None


def _review_case(
    tab: Page,
    key: str,
    status: str,
    truth: Truth,
    image_path: str,
    edits: set[str],
    missed: tuple[str, list[float]] | None,
    clicked: Clicked,
) -> str:
    """Decide one case by the ground truth, making the edits named in ``edits``; returns the
    verdict it set."""
    tab.wait_for_selector(f'body[data-case-ready="{key}"]')
    boxes = _drawn_boxes(tab)
    by_y = sorted(boxes, key=lambda b: boxes[b][1][1] + boxes[b][1][3])
    positives = {
        str(row.get_attribute("data-box"))
        for row in tab.locator('[data-testid="vertebra"]').all()
        if row.locator(".pos").count()
    }
    intact = [b for b in by_y if boxes[b][0] not in truth.fractured]
    skip: set[str] = set()

    if "delete" in edits:  # the top intact box: a reviewer judges it a false box
        box = intact[0]
        _row(tab, box).locator('[data-testid="delete-box"]').click()
        tab.wait_for_selector(
            f'[data-testid="vertebra"][data-box="{box}"] [data-testid="restore-box"]'
        )
        clicked.deleted = (image_path, box)
        skip.add(box)
    if "unsure" in edits:  # the next intact box: select its row, then the key u
        box = intact[1]
        _row(tab, box).locator("td.num").click()
        _blur(tab)
        tab.keyboard.press("u")
        tab.wait_for_selector(f'[data-testid="vertebra"][data-box="{box}"][data-decision="unsure"]')
        clicked.unsure = (image_path, box)
        skip.add(box)
    if "move" in edits:  # a middle box (an edge one stops at the image's edge), by MOVE_BY
        box = by_y[len(by_y) // 2]
        before = boxes[box][1]
        x, y, scale = _screen(tab, (before[0] + before[2]) / 2, (before[1] + before[3]) / 2)
        _drag(tab, (x, y), (x + MOVE_BY[0], y + MOVE_BY[1]))
        _saved(tab)
        after = _drawn_boxes(tab)[box][1]
        clicked.moved = (image_path, box, before, after, scale)
    if "rename" in edits:  # the top or bottom box to the level next to it that the image lacks
        present = {level for level, _ in boxes.values()}
        box, new = next(
            (box, LEVELS[index])
            for box, step in ((by_y[0], -1), (by_y[-1], 1))
            for index in [LEVELS.index(boxes[box][0]) + step]
            if 0 <= index < len(LEVELS) and LEVELS[index] not in present
        )
        _row(tab, box).locator('[data-testid="level-select"]').select_option(new)
        tab.wait_for_selector(f'[data-testid="vertebra"][data-box="{box}"][data-level="{new}"]')
        clicked.renamed = (image_path, box, new)
    if missed is not None:  # draw the missed vertebra, name its level, decide it
        level, truth_box = missed
        tab.click('[data-testid="add-box"]')
        x0, y0, scale = _screen(tab, truth_box[0], truth_box[1])
        x1, y1, _ = _screen(tab, truth_box[2], truth_box[3])
        _drag(tab, (x0, y0), (x1, y1))
        tab.wait_for_selector('[data-testid="new-box-dialog"]:not([hidden])')
        tab.select_option('[data-testid="new-level"]', level)
        tab.click('[data-testid="new-box-ok"]')
        tab.wait_for_selector(f'[data-testid="box"][data-level="{level}"]')
        _saved(tab)
        new_box = next(b for b in _drawn_boxes(tab) if b not in boxes)
        clicked.added = (image_path, new_box, truth_box, _drawn_boxes(tab)[new_box][1], scale)

    levels = {box: level for box, (level, _) in _drawn_boxes(tab).items()}
    original = {box: level for box, (level, _) in boxes.items()}
    for box in levels:
        if box in skip:
            continue
        # the label follows the vertebra, not the name a test gave it
        fractured = original.get(box, levels[box]) in truth.fractured
        decision = "fracture" if fractured else "no_fracture"
        _decide(tab, box, decision)
        if fractured and original.get(box, levels[box]) in truth.planted_misses:
            ao = truth.fractured[original[box]]
            _row(tab, box).locator('[data-testid="ao-select"]').select_option(ao)
            # drawn again from the server's answer: the option carries "selected" then
            chosen = f'[data-testid="ao-select"] option[selected][value="{ao}"]'
            tab.wait_for_selector(f'[data-box="{box}"] {chosen}', state="attached")
        clicked.rows[(image_path, box)] = {"decision": decision}
    _saved(tab)
    for box, (level, xyxy) in _drawn_boxes(tab).items():
        if (image_path, box) in clicked.rows:
            clicked.rows[(image_path, box)].update(level=level, xyxy=xyxy)
            if original.get(box, level) in truth.planted_misses:
                clicked.rows[(image_path, box)]["ao_type"] = truth.fractured[original[box]]

    false_flags = positives - {b for b in positives if original[b] in truth.fractured}
    if status == StudyStatus.LIKELY_MISSED.value and truth.planted_misses:
        verdict, control = "confirmed miss", "1"
    elif status == StudyStatus.LIKELY_MISSED.value and false_flags:
        verdict, control = "not a fracture", "verdict-not_a_fracture"
    else:
        verdict, control = "already known", "3"
    if len(control) == 1:
        _blur(tab)
        tab.keyboard.press(control)
    else:
        tab.click(f'[data-testid="{control}"]')
    testid = "verdict-" + verdict.replace(" ", "_")
    tab.wait_for_selector(f'[data-testid="{testid}"][aria-pressed="true"]')
    _saved(tab)
    return verdict


# -- the test ---------------------------------------------------------------------------------


def _invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_scan_review_export_train_evaluate_calibrate(tmp_path: Path, page: Page) -> None:
    run_dir = tmp_path / "run"
    archive = SAMPLE_DATA / "archive"
    _invoke(
        ["scan", str(archive), "--reads", str(SAMPLE_DATA / "reads.csv"), "--out", str(run_dir)]
    )
    run = load_run(run_dir)
    truths = _truths()
    flagged = [c for c in run.studies if c.queue_rank is not None]
    likely = [c for c in flagged if c.status is StudyStatus.LIKELY_MISSED]
    planted = {uid for uid, t in truths.items() if t.planted_misses}
    assert planted <= {c.study_uid for c in likely}, "a planted miss is not flagged"
    false_flags = [c for c in likely if not truths[c.study_uid].planted_misses]
    assert false_flags, "no false flag among the likely missed studies to reject"

    keys = [c.key for c in flagged]
    missed_key, missed_level, missed_box = _missed_vertebra(run, keys)
    # the edits go to studies without a planted miss or a false flag, whose verdicts they leave
    plain = [
        c.key for c in flagged if c.key != missed_key and c.status is not StudyStatus.LIKELY_MISSED
    ]
    edits = {plain[0]: {"move"}, plain[1]: {"rename"}, plain[2]: {"delete", "unsure"}}
    clicked = Clicked(rows={})
    verdicts: dict[str, str] = {}

    with helpers.serve_workbench(run_dir, reviewer=REVIEWER) as url:
        page.goto(url)
        rows = page.locator('[data-testid="queue-section-flagged"] [data-testid="queue-row"]')
        assert [rows.nth(i).get_attribute("data-study") for i in range(rows.count())] == keys
        page.keyboard.press("j")
        for index, case in enumerate(flagged):
            verdicts[case.key] = _review_case(
                page,
                case.key,
                case.status.value,
                truths[case.study_uid],
                case.images[0].image,
                edits.get(case.key, set()),
                (missed_level, missed_box) if case.key == missed_key else None,
                clicked,
            )
            if index + 1 < len(flagged):
                _blur(page)
                page.keyboard.press("j")
        progress = page.locator('[data-testid="progress"]').inner_text()
        assert progress == f"{len(flagged)} of {len(flagged)} reviewed"

    # -- the export is exactly what was clicked ---------------------------------------------
    exported = tmp_path / "labels.csv"
    _invoke(["export-annotations", str(run_dir), "--out", str(exported)])
    with exported.open(newline="") as fh:
        out_rows = list(csv.DictReader(fh))
    expected = {
        (image, row["level"]): (
            "fracture" if row["decision"] == "fracture" else "no_fracture",
            row.get("ao_type", ""),
            REVIEWER,
        )
        for (image, _box), row in clicked.rows.items()
    }
    got = {(r["image"], r["level"]): (r["label"], r["ao_type"], r["reviewer"]) for r in out_rows}
    assert got == expected
    assert len(out_rows) == len(clicked.rows)
    drawn = {(image, row["level"]): row["xyxy"] for (image, _b), row in clicked.rows.items()}
    for r in out_rows:
        xyxy = [float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
        assert xyxy == pytest.approx(drawn[(r["image"], r["level"])], abs=0.011)

    # the moved box went where it was dragged, the added one where it was drawn
    assert clicked.moved is not None and clicked.added is not None
    _image, _box, before, after, scale = clicked.moved
    assert after[0] - before[0] == pytest.approx(MOVE_BY[0] / scale, abs=1.5 / scale)
    assert after[1] - before[1] == pytest.approx(MOVE_BY[1] / scale, abs=1.5 / scale)
    assert after[2] - after[0] == pytest.approx(before[2] - before[0], abs=0.02)
    image, _box, truth_box, drawn_box, scale = clicked.added
    assert drawn_box == pytest.approx(truth_box, abs=1.5 / scale)
    assert (image, missed_level) in got
    assert clicked.renamed is not None and (clicked.renamed[0], clicked.renamed[2]) in got
    assert clicked.deleted is not None and clicked.deleted not in clicked.rows
    assert clicked.unsure is not None and clicked.unsure not in clicked.rows
    rejected = 0
    for case in likely:  # every planted miss confirmed at its level, the false flag rejected
        truth = truths[case.study_uid]
        image = case.images[0].image
        for level in truth.planted_misses:
            assert got[(image, level)] == ("fracture", truth.fractured[level], REVIEWER)
        for v in case.images[0].vertebrae:
            if v.positive and v.level.value not in truth.fractured:
                assert got[(image, v.level.value)][0] == "no_fracture"
                rejected += 1
    assert rejected >= len(false_flags)
    labels = [r["label"] for r in out_rows]
    assert labels.count("fracture") >= 10 and labels.count("no_fracture") >= 40

    # -- the verdicts: every planted miss confirmed, the false flag rejected ----------------
    stats_file = tmp_path / "stats.json"
    _invoke(["review-stats", str(run_dir), "--json", str(stats_file)])
    (mine,) = json.loads(stats_file.read_text())["reviewers"]
    assert list(verdicts.values()).count("confirmed miss") == len(planted)
    assert list(verdicts.values()).count("not a fracture") == len(false_flags)
    assert mine["reviewer"] == REVIEWER
    assert (mine["flagged"], mine["flagged_reviewed"]) == (len(flagged), len(flagged))
    assert mine["confirmed_misses"] == len(planted)
    ppv = mine["ppv_likely_missed"]
    assert (ppv["k"], ppv["n"]) == (len(planted), len(likely))

    # -- the labels train, evaluate and calibrate a model ------------------------------------
    bundle = tmp_path / "bundle"
    _invoke(
        ["train", str(archive), "--annotations", str(exported), "--out", str(bundle), *FAST_TRAIN]
    )
    trained = load_bundle(bundle).card
    assert trained.training["n_crops"] == len(out_rows)
    report = tmp_path / "evaluation"
    _invoke(
        ["evaluate", str(bundle), str(archive), "--annotations", str(exported), "--out",
         str(report), "--device", "cpu", "--bootstrap", "50"]
    )  # fmt: skip
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation["data"]["n_crops"] == len(out_rows)
    assert evaluation["annotations"] == str(exported)
    calibrated = tmp_path / "calibrated"
    _invoke(
        ["calibrate", str(bundle), str(archive), "--annotations", str(exported), "--out",
         str(calibrated), "--device", "cpu", "--force", "--bootstrap", "50"]
    )  # fmt: skip
    card = load_bundle(calibrated).card
    assert set(card.operating_points) == {"balanced", "sensitive", "specific"}
    assert load_bundle(calibrated).sha256 == load_bundle(bundle).sha256
