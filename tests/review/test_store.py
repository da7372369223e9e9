"""The review store: validation, the state it gives back, append-only storage, kill safety."""

from __future__ import annotations

import json
import math
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import InputFileError, ReviewError, UsageError
from auditor.review.store import (
    REVIEW_DB_NAME,
    Field,
    ReviewStore,
    box_id,
    box_row_of,
    open_existing,
)
from auditor.vocab import Level, StudyVerdict, VertebraDecision

STUDY, IMAGE = "1.2.3", "0" * 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReviewStore]:
    with ReviewStore(tmp_path) as opened:
        yield opened


def test_decisions_come_back_as_state(store: ReviewStore) -> None:
    box = box_id(3)
    first = store.record("alice", "decision", "fracture", study=STUDY, image=IMAGE, box=box)
    assert first.before is None and first.value == "fracture" and first.field is Field.DECISION
    again = store.record(
        "alice", Field.DECISION, VertebraDecision.NO_FRACTURE, study=STUDY, image=IMAGE, box=box
    )
    assert again.before == "fracture" and again.id > first.id
    store.record("alice", "genant_grade", "2", study=STUDY, image=IMAGE, box=box)
    store.record("alice", "ao_type", "a3", study=STUDY, image=IMAGE, box=box)
    store.record("alice", "box", [1, 2, 30, 40.5], study=STUDY, image=IMAGE, box=box)
    store.record("alice", "level", "t12", study=STUDY, image=IMAGE, box=box)
    store.record("alice", "verdict", "confirmed miss", study=STUDY)
    store.record("alice", "comment", "<b>look</b> =1+1", study=STUDY)
    store.record("bob", "decision", "unsure", study=STUDY, image=IMAGE, box=box)

    state = store.state("alice")
    review = state.vertebrae[(STUDY, IMAGE, box)]
    assert review.decision is VertebraDecision.NO_FRACTURE
    assert (review.genant_grade, review.ao_type) == (2, "A3")
    assert review.xyxy == (1.0, 2.0, 30.0, 40.5) and review.level is Level.T12
    assert not review.added and not review.deleted
    assert state.studies[STUDY].verdict is StudyVerdict.CONFIRMED_MISS
    assert state.studies[STUDY].comment == "<b>look</b> =1+1"
    # each reviewer sees only their own decisions
    bob = store.state("bob")
    assert bob.vertebrae[(STUDY, IMAGE, box)].decision is VertebraDecision.UNSURE
    assert bob.studies == {}
    assert store.reviewers() == ("alice", "bob")
    assert len(store.events()) == 9 and len(store.events("bob")) == 1
    # clearing is a value too
    cleared = store.record("alice", "decision", None, study=STUDY, image=IMAGE, box=box)
    assert cleared.before == "no_fracture"
    assert store.state("alice").vertebrae[(STUDY, IMAGE, box)].decision is None


def test_added_box_and_deletion(store: ReviewStore) -> None:
    added = store.add_box("alice", study=STUDY, image=IMAGE, level="L1", xyxy=(5, 6, 25, 26))
    assert added.box.startswith("new-") and box_row_of(added.box) is None
    assert added.value == {"level": "L1", "box": [5.0, 6.0, 25.0, 26.0]}
    store.record("alice", "level", "L2", study=STUDY, image=IMAGE, box=added.box)
    store.record("alice", "deleted", True, study=STUDY, image=IMAGE, box=added.box)
    review = store.state("alice").vertebrae[(STUDY, IMAGE, added.box)]
    assert review.added and review.deleted and review.level is Level.L2
    assert review.xyxy == (5.0, 6.0, 25.0, 26.0)
    # another reviewer cannot edit a box they did not add
    with pytest.raises(ReviewError, match="was not added by 'bob'"):
        store.record("bob", "decision", "fracture", study=STUDY, image=IMAGE, box=added.box)


@pytest.mark.parametrize(
    ("field", "value", "keys", "match"),
    [
        ("colour", "red", {}, "unknown review field 'colour'"),
        ("decision", "broken", {}, "decision 'broken' is not one of"),
        ("verdict", "missed", {"image": "", "box": ""}, "verdict 'missed' is not one of"),
        ("genant_grade", 4, {}, "genant_grade 4 is not a Genant grade"),
        ("genant_grade", True, {}, "genant_grade True is not a Genant grade"),
        ("genant_grade", 1.5, {}, "genant_grade 1.5 is not a Genant grade"),
        ("ao_type", "D1", {}, "ao_type 'D1' is not an AO Spine type"),
        ("ao_type", 3, {}, "ao_type 3 is not an AO Spine type"),
        ("box", [1, 2, 3], {}, r"box must be \[x_min, y_min, x_max, y_max\]"),
        ("box", "1,2,3,4", {}, r"box must be \[x_min, y_min, x_max, y_max\]"),
        ("box", [0, 0, math.nan, 20], {}, "is not a finite number"),
        ("box", [0, 0, math.inf, 20], {}, "is not a finite number"),
        ("box", [0, 0, "9", 20], {}, "'9' is not a number"),
        ("box", [30, 0, 10, 20], {}, "degenerate box"),
        ("box", [0, 20, 10, 0], {}, "degenerate box"),
        ("level", "C5", {}, "unknown vertebral level 'C5'"),
        ("deleted", "yes", {}, "deleted must be true or false"),
        ("comment", "x" * 2001, {"image": "", "box": ""}, "at most 2000 characters, got 2001"),
        ("comment", 5, {"image": "", "box": ""}, "comment must be text"),
        ("comment", "fine", {}, "comment is a study field: give no image or box"),
        ("decision", "fracture", {"box": ""}, "box '' is not 1 to 256"),
        ("decision", "fracture", {"image": ""}, "image '' is not 1 to 256"),
        ("decision", "fracture", {"box": "box-0"}, "box id 'box-0' is neither"),
        ("decision", "fracture", {"box": "../x"}, "box id '../x' is neither"),
        ("decision", "fracture", {"study": ""}, "study '' is not 1 to 256"),
        ("decision", "fracture", {"study": "a\x00b"}, "is not 1 to 256 printable"),
        ("added", {"level": "L1", "box": [0, 0, 9, 9]}, {}, r"with add_box\(\)"),
        ("sample", {"studies": []}, {"image": "", "box": ""}, r"with sample\(\)"),
    ],
)
def test_bad_values_are_refused(
    store: ReviewStore, field: str, value: Any, keys: dict[str, str], match: str
) -> None:
    where = {"study": STUDY, "image": IMAGE, "box": "box-1", **keys}
    with pytest.raises(ReviewError, match=match):
        store.record("alice", field, value, **where)
    assert store.events() == ()  # nothing recorded


@pytest.mark.parametrize(
    ("reviewer", "match"),
    [("", "is not 1 to 64"), ("   ", "is not 1 to 64"), ("x" * 65, "is not 1 to 64"),
     ("a\nb", "is not 1 to 64"), (None, "reviewer must be a name")],
)  # fmt: skip
def test_bad_reviewer_names_are_refused(store: ReviewStore, reviewer: Any, match: str) -> None:
    with pytest.raises(ReviewError, match=match):
        store.record(reviewer, "verdict", "unsure", study=STUDY)


def test_review_error_is_a_usage_error() -> None:
    assert issubclass(ReviewError, UsageError)
    with pytest.raises(ReviewError, match="is not a positive integer"):
        box_id(0)


def test_sample_is_reproducible_and_recorded_once(store: ReviewStore) -> None:
    candidates = [f"study-{n:02d}" for n in range(20)]
    drawn = store.sample("alice", list(reversed(candidates)), 5, seed=7)
    assert drawn == tuple(random.Random(7).sample(sorted(candidates), 5))
    # later calls return the stored sample, whatever they ask
    assert store.sample("alice", candidates[:3], 2, seed=99) == drawn
    assert store.state("alice").sample == drawn
    assert store.sample("bob", candidates[:3], 10) == tuple(
        random.Random(0).sample(candidates[:3], 3)
    )
    assert [e.field for e in store.events()] == [Field.SAMPLE, Field.SAMPLE]


def test_events_are_append_only(tmp_path: Path) -> None:
    with ReviewStore(tmp_path) as store:
        store.record("alice", "verdict", "unsure", study=STUDY)
    db = sqlite3.connect(tmp_path / REVIEW_DB_NAME)
    try:
        for statement in ("UPDATE events SET value = '\"confirmed miss\"'", "DELETE FROM events"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
        assert db.execute("SELECT value FROM events").fetchall() == [('"unsure"',)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = db.execute("SELECT field, value FROM current_state").fetchall()
        assert rows == [("verdict", '"unsure"')]
    finally:
        db.close()


def test_current_state_view_holds_the_latest_event(store: ReviewStore) -> None:
    for verdict in ("unsure", "confirmed miss", "not a fracture"):
        store.record("alice", "verdict", verdict, study=STUDY)
    store.record("bob", "verdict", "unsure", study=STUDY)
    db = sqlite3.connect(store.path)
    try:
        rows = db.execute("SELECT reviewer, value FROM current_state ORDER BY reviewer").fetchall()
    finally:
        db.close()
    assert rows == [("alice", '"not a fracture"'), ("bob", '"unsure"')]


def test_a_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    (tmp_path / REVIEW_DB_NAME).write_bytes(b"not a database at all" * 10)
    with pytest.raises(InputFileError, match="is not a tlaudit review store"):
        ReviewStore(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(other / REVIEW_DB_NAME)
    db.execute("CREATE TABLE events (x)")
    db.commit()
    db.close()
    with pytest.raises(InputFileError, match="no 'tlaudit-review' format marker"):
        ReviewStore(other)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ReviewStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / REVIEW_DB_NAME)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(InputFileError, match="schema '99'"):
        ReviewStore(tmp_path)


def test_open_existing_never_creates_a_store(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nobody has reviewed this run yet"):
        open_existing(tmp_path)
    assert not (tmp_path / REVIEW_DB_NAME).exists()
    with pytest.raises(ReviewError, match="is not a folder"):
        ReviewStore(tmp_path / "missing")


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from auditor.review.store import ReviewStore

    store = ReviewStore(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        event = store.record(
            "alice", "decision", "fracture" if n % 2 else "no_fracture",
            study="s", image="i", box=f"box-{n}",
        )
        print(event.id, flush=True)  # acknowledged: committed before record() returned
    """
)


def test_no_acknowledged_event_is_lost_to_sigkill(tmp_path: Path) -> None:
    """A writer killed with SIGKILL in the middle of recording: every event record() had
    returned (and the child had printed) is in the file when it is opened again."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged: list[int] = []
    for line in child.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 60:
            break
    child.send_signal(signal.SIGKILL)
    acknowledged += [int(line) for line in child.stdout]  # printed before the kill landed
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with ReviewStore(tmp_path) as reopened:
        stored = {event.id: event for event in reopened.events()}
        state = reopened.state("alice")
    assert set(acknowledged) <= set(stored)
    assert len(state.vertebrae) == len(stored)
    assert all(json.dumps(stored[i].value) in ('"fracture"', '"no_fracture"') for i in stored)
