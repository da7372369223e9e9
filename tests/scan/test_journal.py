"""The run journal: commits, read-back, refusal to overwrite, and fingerprint checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from auditor.errors import TlauditError, UsageError
from auditor.scan.journal import JOURNAL_NAME, ImageOutcome, RunJournal, VertebraOutcome
from auditor.vocab import Level

FINGERPRINT = {"model_sha256": "abc", "threshold": 0.5}


def _outcome(image: str, p: float) -> ImageOutcome:
    return ImageOutcome(
        image,
        "classified",
        "",
        (
            VertebraOutcome(2, Level.L1, p, "thumbnails/heatmaps/x-L1.jpg"),
            VertebraOutcome(1, Level.T12, None, "", "cannot cut the crop"),
        ),
    )


def test_round_trip_and_resume(tmp_path: Path) -> None:
    with RunJournal(tmp_path, FINGERPRINT, resume=False) as journal:
        journal.record([_outcome("b.dcm", 0.25), ImageOutcome("a.dcm", "failed", "broken")])
        journal.set_meta("salt", "s3cret")
    with RunJournal(tmp_path, FINGERPRINT, resume=True) as journal:
        assert journal.finished_images() == {"a.dcm", "b.dcm"}
        assert journal.get_meta("salt") == "s3cret"
        outcomes = journal.outcomes()
    assert list(outcomes) == ["a.dcm", "b.dcm"]
    assert outcomes["a.dcm"].status == "failed" and outcomes["a.dcm"].reason == "broken"
    rows = outcomes["b.dcm"].vertebrae
    assert [v.box_row for v in rows] == [1, 2]
    assert rows[0].probability is None and rows[0].error == "cannot cut the crop"
    assert rows[1].probability == 0.25 and rows[1].level is Level.L1


def test_image_check_distances_are_committed_with_their_batch_and_forgotten_with_it(
    tmp_path: Path,
) -> None:
    with RunJournal(tmp_path, FINGERPRINT, resume=False) as journal:
        journal.record([_outcome("b.dcm", 0.25)], {"b.dcm": 0.75})
        journal.record([ImageOutcome("a.dcm", "failed", "broken")], {})
        journal.record_distances({"c.dcm": 2.5})
    with RunJournal(tmp_path, FINGERPRINT, resume=True) as journal:
        assert journal.image_distances() == {"b.dcm": 0.75, "c.dcm": 2.5}
        journal.forget(["b.dcm"])
        assert journal.image_distances() == {"c.dcm": 2.5}


def test_a_journal_from_before_the_image_check_table_gets_it_empty(tmp_path: Path) -> None:
    with RunJournal(tmp_path, FINGERPRINT, resume=False) as journal:
        journal.record([_outcome("b.dcm", 0.25)])
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as db:
        db.execute("DROP TABLE image_check")
    with RunJournal(tmp_path, FINGERPRINT, resume=True) as journal:
        assert journal.finished_images() == {"b.dcm"} and journal.image_distances() == {}


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    RunJournal(tmp_path, FINGERPRINT, resume=False).close()
    with pytest.raises(UsageError, match="pass --resume"):
        RunJournal(tmp_path, FINGERPRINT, resume=False)


def test_resume_with_other_inputs_is_refused(tmp_path: Path) -> None:
    RunJournal(tmp_path, FINGERPRINT, resume=False).close()
    with pytest.raises(UsageError, match="threshold"):
        RunJournal(tmp_path, {**FINGERPRINT, "threshold": 0.7}, resume=True)


def test_resume_without_journal_starts_fresh(tmp_path: Path) -> None:
    with RunJournal(tmp_path, FINGERPRINT, resume=True) as journal:
        assert journal.finished_images() == set()


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TlauditError, match="not a tlaudit run journal"):
        RunJournal(tmp_path, FINGERPRINT, resume=True)
