"""A study as a reviewer leaves it, and the verdict its decisions propose."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from auditor.records import ReadRow, StudyCase
from auditor.review.decisions import propose_verdict, reviewed_vertebrae
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import ReviewState, VertebraReview, box_id
from auditor.vocab import Level, StudyVerdict, VertebraDecision

F, N, U = VertebraDecision.FRACTURE, VertebraDecision.NO_FRACTURE, VertebraDecision.UNSURE
ALL_LEVELS = (Level.T12, Level.L1, Level.L2, Level.L3)  # the scan world's four boxes


@pytest.fixture(scope="module")
def run(scanned: Path) -> ReviewRun:
    return load_run(scanned)


def _state(*reviews: VertebraReview) -> ReviewState:
    return ReviewState(
        reviewer="alice",
        vertebrae={(r.study, r.image, r.box): r for r in reviews},
        studies={},
    )


def test_scan_boxes_then_added_ones_with_the_reviewers_changes(run: ReviewRun) -> None:
    case = run.studies[0]
    image = case.images[0]
    rows = [v.box_row for v in image.vertebrae]  # T12, L1, L2, L3
    state = _state(
        VertebraReview(case.key, image.ref, box_id(rows[0]), decision=F, genant_grade=2),
        VertebraReview(case.key, image.ref, box_id(rows[1]), xyxy=(1.0, 2.0, 30.0, 40.0)),
        VertebraReview(case.key, image.ref, box_id(rows[2]), level=Level.L4, decision=N),
        VertebraReview(case.key, image.ref, box_id(rows[3]), deleted=True),
        VertebraReview(
            case.key,
            image.ref,
            "new-00000000000a",
            level=Level.T11,
            xyxy=(5.0, 5.0, 40.0, 30.0),
            added=True,
            decision=F,
        ),
        # another study's review and a box this study does not hold change nothing
        VertebraReview("other", image.ref, box_id(rows[0]), decision=N),
        VertebraReview(case.key, image.ref, box_id(999), decision=N),
    )
    result = reviewed_vertebrae(case, state)
    assert [(v.box, v.level) for v in result] == [
        (box_id(rows[0]), Level.T12),
        (box_id(rows[1]), Level.L1),
        (box_id(rows[2]), Level.L4),
        (box_id(rows[3]), Level.L3),
        ("new-00000000000a", Level.T11),
    ]
    first, moved, renamed, deleted, added = result
    assert first.decision is F and first.genant_grade == 2 and first.label == 1
    assert first.original is image.vertebrae[0] and first.probability is not None
    assert moved.moved and moved.xyxy == (1.0, 2.0, 30.0, 40.0) and not moved.renamed
    assert moved.label is None  # undecided: never a silent negative
    assert renamed.renamed and not renamed.moved and renamed.label == 0
    assert deleted.deleted and deleted.label is None
    assert added.added and added.original is None and added.probability is None
    assert not added.moved and not added.renamed


def test_an_unreviewed_study_is_the_scan_as_it_was(run: ReviewRun) -> None:
    case = run.studies[-1]
    result = reviewed_vertebrae(case, _state())
    boxes = [v for image in case.images for v in image.vertebrae]
    assert [v.xyxy for v in result] == [v.box for v in boxes]
    assert not any(v.moved or v.renamed or v.added or v.deleted or v.decision for v in result)
    assert propose_verdict(case, result) is None


def _read(reported: bool, levels: tuple[Level, ...] = ()) -> ReadRow:
    return ReadRow(1, "", "", "", reported, levels, "")


@pytest.mark.parametrize(
    ("read", "decisions", "expected"),
    [
        (_read(True, (Level.L1,)), {Level.T12: F}, StudyVerdict.CONFIRMED_MISS),
        (_read(True, (Level.L1,)), {Level.L1: F, Level.T12: F}, StudyVerdict.CONFIRMED_MISS),
        (_read(False), {Level.L2: F}, StudyVerdict.CONFIRMED_MISS),
        (_read(True, (Level.L1,)), {Level.L1: F, Level.T12: N}, StudyVerdict.ALREADY_KNOWN),
        (_read(True), {Level.L3: F}, StudyVerdict.ALREADY_KNOWN),  # levels not named: all
        (None, {Level.L3: F}, None),  # no read to have missed it
        (_read(False), {Level.L3: U, Level.L1: N}, StudyVerdict.UNSURE),
        (_read(False), {Level.L3: U}, StudyVerdict.UNSURE),
        (None, dict.fromkeys(ALL_LEVELS, N), StudyVerdict.NOT_A_FRACTURE),
        (_read(True, (Level.L1,)), {Level.T12: N, Level.L1: N}, None),  # two still undecided
        (_read(False), {}, None),
    ],
)  # fmt: skip
def test_proposed_verdict(
    run: ReviewRun,
    read: ReadRow | None,
    decisions: dict[Level, VertebraDecision],
    expected: StudyVerdict | None,
) -> None:
    case: StudyCase = replace(run.studies[0], read=read)
    image = case.images[0]
    state = _state(
        *(
            VertebraReview(case.key, image.ref, box_id(v.box_row), decision=decisions[v.level])
            for v in image.vertebrae
            if v.level in decisions
        )
    )
    assert propose_verdict(case, reviewed_vertebrae(case, state)) is expected


def test_deleted_boxes_do_not_count_towards_a_verdict(run: ReviewRun) -> None:
    case = replace(run.studies[0], read=_read(False))
    image = case.images[0]
    first, *rest = image.vertebrae
    state = _state(
        VertebraReview(case.key, image.ref, box_id(first.box_row), decision=F, deleted=True),
        *(VertebraReview(case.key, image.ref, box_id(v.box_row), decision=N) for v in rest),
    )
    assert propose_verdict(case, reviewed_vertebrae(case, state)) is StudyVerdict.NOT_A_FRACTURE
