"""``export-annotations``: decided vertebrae become a box file ``train`` and ``evaluate`` read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.boxes import BOX_FILE_COLUMNS, read_box_file
from auditor.cli.app import app
from auditor.cli.labels import REVIEW_ANNOTATIONS_NAME
from auditor.errors import UsageError
from auditor.review.export import (
    SKIP_DELETED,
    SKIP_DISAGREE,
    SKIP_SAME_LEVEL,
    SKIP_UNDECIDED,
    SKIP_UNSURE,
    choose_reviewers,
    export_annotations,
)
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import ReviewStore, box_id
from auditor.vocab import Level

runner = CliRunner()


def _boxes(run: ReviewRun, study: int) -> tuple[str, str, list[str]]:
    """Study key, image reference and the box ids (T12, L1, L2, L3) of a study of the run."""
    case = run.studies[study]
    image = case.images[0]
    return case.key, image.ref, [box_id(v.box_row) for v in image.vertebrae]


def _total_boxes(run: ReviewRun) -> int:
    return sum(len(image.vertebrae) for case in run.studies for image in case.images)


def test_one_reviewers_decisions_read_back_as_labelled_boxes(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    # the last study in the queue is study 0, whose patient ID is a formula
    hostile = next(case for case in run.studies if case.patient_id.startswith("="))
    study, ref, boxes = (
        hostile.key,
        hostile.images[0].ref,
        [box_id(v.box_row) for v in hostile.images[0].vertebrae],
    )
    with ReviewStore(fresh_run) as store:
        store.record("alice", "decision", "fracture", study=study, image=ref, box=boxes[0])
        store.record("alice", "ao_type", "A1", study=study, image=ref, box=boxes[0])
        store.record("alice", "genant_grade", 2, study=study, image=ref, box=boxes[0])
        store.record("alice", "decision", "no_fracture", study=study, image=ref, box=boxes[1])
        store.record("alice", "box", [31, 47, 69.5, 77], study=study, image=ref, box=boxes[1])
        store.record("alice", "decision", "unsure", study=study, image=ref, box=boxes[2])
        store.record("alice", "decision", "no_fracture", study=study, image=ref, box=boxes[3])
        store.record("alice", "level", "L4", study=study, image=ref, box=boxes[3])
        store.record("alice", "decision", "fracture", study=study, image=ref, box=boxes[2])
        store.record("alice", "deleted", True, study=study, image=ref, box=boxes[2])
        added = store.add_box("alice", study=study, image=ref, level="T11", xyxy=(30, 1, 70, 11))
        store.record("alice", "decision", "no_fracture", study=study, image=ref, box=added.box)
        store.record("alice", "decision", "unsure", study=study, image=ref, box=added.box)

    for suffix in ("csv", "json"):
        result = export_annotations(fresh_run, fresh_run.parent / f"labels.{suffix}")
        export = result.export
        assert result.archive == run.archive and export.reviewers == ("alice",)
        assert export.counts() == {"fracture": 1, "no_fracture": 2}
        assert export.skipped == {
            SKIP_DELETED: 1,
            SKIP_UNDECIDED: _total_boxes(run) - 4,
            SKIP_UNSURE: 1,
        }
        table = read_box_file(result.path)
        assert table.errors == ()
        got = {box.level: box for box in table.rows}
        assert sorted(got, key=lambda level: level.order) == [Level.T12, Level.L1, Level.L4]
        assert {box.image for box in table.rows} == {run.source(ref)}  # the real path
        assert got[Level.T12].label == 1 and got[Level.T12].ao_type == "A1"
        assert got[Level.T12].genant_grade == 2
        assert got[Level.L1].label == 0 and got[Level.L1].xyxy == (31.0, 47.0, 69.5, 77.0)
        assert got[Level.L4].label == 0  # renamed from L3
        assert all(box.patient_id == hostile.patient_id for box in table.rows)
        assert all(box.study_uid == hostile.study_uid for box in table.rows)
        assert all(box.sop_instance_uid == hostile.images[0].sop_instance_uid for box in table.rows)
    # the CSV names the reviewer and cannot run a formula in a spreadsheet
    with (fresh_run.parent / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(BOX_FILE_COLUMNS)
    assert {row["reviewer"] for row in rows} == {"alice"}
    assert all(row["patient_id"] == "'" + hostile.patient_id for row in rows)
    coco = json.loads((fresh_run.parent / "labels.json").read_text(encoding="utf-8"))
    assert {a["attributes"]["reviewer"] for a in coco["annotations"]} == {"alice"}


def test_two_boxes_renamed_to_one_level_are_refused(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    study, ref, boxes = _boxes(run, 0)
    with ReviewStore(fresh_run) as store:
        for box in boxes:
            store.record("alice", "decision", "no_fracture", study=study, image=ref, box=box)
        store.record("alice", "level", "L2", study=study, image=ref, box=boxes[0])
    export = export_annotations(fresh_run, fresh_run.parent / "labels.csv").export
    assert export.skipped[SKIP_SAME_LEVEL] == 2
    assert sorted(row.level.value for row in export.rows) == ["L1", "L3"]


def test_consensus_keeps_what_every_deciding_reviewer_agrees_on(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    study, ref, boxes = _boxes(run, 0)
    where = {"study": study, "image": ref}
    with ReviewStore(fresh_run) as store:
        for name in ("alice", "bob"):
            store.record(name, "decision", "fracture", box=boxes[0], **where)  # agree
            store.record(name, "decision", "no_fracture", box=boxes[1], **where)  # level differs
        store.record("alice", "box", [30, 10, 70, 40], box=boxes[0], **where)
        store.record("bob", "box", [32, 12, 72, 42], box=boxes[0], **where)
        store.record("bob", "level", "L4", box=boxes[1], **where)
        store.record("alice", "decision", "fracture", box=boxes[2], **where)  # label differs
        store.record("bob", "decision", "no_fracture", box=boxes[2], **where)
        store.record("alice", "decision", "no_fracture", box=boxes[3], **where)  # alice only
        store.record("carol", "verdict", "unsure", study=study)  # decided no box
    with pytest.raises(UsageError, match="3 reviewers recorded decisions"):
        export_annotations(fresh_run, fresh_run.parent / "labels.csv")
    export = export_annotations(fresh_run, fresh_run.parent / "c.csv", consensus=True).export
    assert export.consensus and export.reviewers == ("alice", "bob", "carol")
    assert export.skipped[SKIP_DISAGREE] == 2
    rows = {row.box: row for row in export.rows}
    assert set(rows) == {boxes[0], boxes[3]}
    assert rows[boxes[0]].reviewer == "alice;bob" and rows[boxes[0]].label == 1
    assert rows[boxes[0]].xyxy == (31.0, 11.0, 71.0, 41.0)  # the mean of their boxes
    assert rows[boxes[3]].reviewer == "alice"
    bob = export_annotations(fresh_run, fresh_run.parent / "b.csv", reviewer="bob").export
    assert bob.counts() == {"fracture": 1, "no_fracture": 2}


@pytest.mark.parametrize(
    ("reviewers", "reviewer", "consensus", "match"),
    [
        (("a",), "a", True, "either --reviewer or --consensus"),
        ((), None, False, "no reviewer has recorded"),
        (("a", "b"), "c", False, "reviewer 'c' recorded nothing"),
        (("a", "b"), None, False, "2 reviewers recorded decisions"),
    ],
)
def test_choosing_reviewers(
    reviewers: tuple[str, ...], reviewer: str | None, consensus: bool, match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        choose_reviewers(reviewers, reviewer, consensus)


def test_export_annotations_command(fresh_run: Path) -> None:
    out = fresh_run.parent / "labels.txt"
    result = runner.invoke(app, ["export-annotations", str(fresh_run), "--out", str(out)])
    assert isinstance(result.exception, UsageError)
    assert "nobody has reviewed this run yet" in str(result.exception)
    assert not (fresh_run / "review.sqlite").exists()  # reading never creates a store
    run = load_run(fresh_run)
    study, ref, boxes = _boxes(run, 0)
    with ReviewStore(fresh_run) as store:
        store.record("alice", "decision", "fracture", study=study, image=ref, box=boxes[0])
    result = runner.invoke(app, ["export-annotations", str(fresh_run), "--out", str(out)])
    assert isinstance(result.exception, UsageError) and ".csv or .json" in str(result.exception)
    out = out.with_suffix(".csv")
    result = runner.invoke(
        app, ["export-annotations", str(fresh_run), "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "1 rows: 1 fracture, 0 no_fracture" in result.output
    assert SKIP_UNDECIDED in result.output and "reviewer alice" in result.output
    assert len(read_box_file(out).rows) == 1


def test_evaluate_takes_a_reviewed_run_folder(fresh_run: Path, review_bundle: Path) -> None:
    """``evaluate --annotations RUN_DIR`` exports the run's decisions into --out and evaluates
    on them; ARCHIVE must be the archive the run scanned."""
    run = load_run(fresh_run)
    with ReviewStore(fresh_run) as store:
        for index in range(3):
            study, ref, boxes = _boxes(run, index)
            for n, box in enumerate(boxes):
                label = "fracture" if n == index else "no_fracture"
                store.record("alice", "decision", label, study=study, image=ref, box=box)
    report = fresh_run.parent / "eval"
    args = ["evaluate", str(review_bundle), str(run.archive), "--annotations", str(fresh_run)]
    options = ["--out", str(report), "--device", "cpu", "--bootstrap", "20"]
    wrong = runner.invoke(app, [*args[:2], str(fresh_run), *args[3:], *options])
    assert isinstance(wrong.exception, UsageError)
    assert "pass that archive as ARCHIVE" in str(wrong.exception)
    result = runner.invoke(app, [*args, *options], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, repr(result.exception))
    assert "reviewer alice" in result.output
    exported = read_box_file(report / REVIEW_ANNOTATIONS_NAME)
    assert len(exported.rows) == 12 and sum(box.label or 0 for box in exported.rows) == 3
    figures = json.loads((report / "evaluation.json").read_text(encoding="utf-8"))
    assert figures["annotations"] == str(report / REVIEW_ANNOTATIONS_NAME)
    assert figures["data"]["n_crops"] == 12 and figures["data"]["n_skipped_rows"] == 0
    assert figures["data"]["by_class"] == {"fracture": 3, "no_fracture": 9}
