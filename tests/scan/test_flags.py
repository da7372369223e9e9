"""Study flag rules: every status, priorities, and levels."""

from __future__ import annotations

import pytest

from auditor.records import ReadRow, StudyStatus
from auditor.scan.flags import flag_study
from auditor.vocab import Level

T12, L1, L2 = Level.T12, Level.L1, Level.L2


def _read(reported: bool, *levels: Level) -> ReadRow:
    return ReadRow(1, "A", "", "", reported, tuple(levels), "")


@pytest.mark.parametrize(
    ("probs", "read", "status", "priority", "unreported"),
    [
        # model positive at L1 (0.9), read says no fracture: a miss with priority 0.9
        ({T12: 0.2, L1: 0.9}, _read(False), StudyStatus.LIKELY_MISSED, 0.9, (L1,)),
        # read names L1, model also positive at L2: miss at L2, priority its probability
        ({L1: 0.95, L2: 0.7}, _read(True, L1), StudyStatus.LIKELY_MISSED, 0.7, (L2,)),
        # read names another level than the model's positive one
        ({T12: 0.1, L1: 0.8}, _read(True, T12), StudyStatus.LIKELY_MISSED, 0.8, (L1,)),
        ({L1: 0.95, L2: 0.1}, _read(True, L1), StudyStatus.CONCORDANT_POSITIVE, 0.0, ()),
        # "fracture: yes" without levels covers every positive level
        ({L1: 0.95, L2: 0.7}, _read(True), StudyStatus.CONCORDANT_POSITIVE, 0.0, ()),
        ({L1: 0.2}, _read(True, L1), StudyStatus.READ_POSITIVE_MODEL_NEGATIVE, 0.0, ()),
        ({L1: 0.2}, _read(False), StudyStatus.CONCORDANT_NEGATIVE, 0.0, ()),
        ({L1: 0.6, L2: 0.8}, None, StudyStatus.NO_READ, 0.8, (L1, L2)),
        ({L1: 0.1}, None, StudyStatus.NEGATIVE_NO_READ, 0.0, ()),
        ({}, None, StudyStatus.NEGATIVE_NO_READ, 0.0, ()),
    ],
)
def test_flag_rules(
    probs: dict[Level, float],
    read: ReadRow | None,
    status: StudyStatus,
    priority: float,
    unreported: tuple[Level, ...],
) -> None:
    flag = flag_study(probs, 0.5, read)
    assert flag.status is status
    assert flag.priority == pytest.approx(priority)
    assert flag.unreported_levels == unreported


def test_threshold_is_inclusive_and_levels_are_ordered() -> None:
    flag = flag_study({L2: 0.5, T12: 0.7}, 0.5, _read(False))
    assert flag.positive_levels == (T12, L2)


def test_flagged_statuses() -> None:
    assert {s for s in StudyStatus if s.flagged} == {
        StudyStatus.LIKELY_MISSED,
        StudyStatus.NO_READ,
        StudyStatus.CONCORDANT_POSITIVE,
        StudyStatus.READ_POSITIVE_MODEL_NEGATIVE,
    }
