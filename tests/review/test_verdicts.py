"""``import-verdicts``: a reviewed workbook read back into the review store; resume keeps it."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import REVIEW_DB_NAME, Field, ReviewStore, box_id
from auditor.review.verdicts import import_verdicts
from auditor.scan.config import HeatmapMode, ScanConfig
from auditor.scan.pipeline import run_scan
from auditor.vocab import StudyVerdict, VertebraDecision


def _columns(sheet: openpyxl.worksheet.worksheet.Worksheet) -> dict[str, int]:
    return {str(cell.value): cell.column for cell in sheet[1]}


def _fill(workbook_path: Path, run: ReviewRun) -> dict[str, object]:
    """Enter verdicts and decisions as a reviewer would, with some rows that cannot be imported;
    return what the good rows name."""
    workbook = openpyxl.load_workbook(workbook_path)
    queue = workbook["Flagged queue"]
    q = _columns(queue)
    first, second = (queue.cell(row=r, column=q["Study"]).value for r in (2, 3))
    queue.cell(row=2, column=q["Reviewer verdict"]).value = "Confirmed Miss "
    queue.cell(row=2, column=q["Comment"]).value = "T12 <b>too</b>"
    queue.cell(row=3, column=q["Reviewer verdict"]).value = "probably"  # unknown verdict
    queue.cell(row=3, column=q["Comment"]).value = "second look"
    extra = queue.max_row + 1
    queue.cell(row=extra, column=q["Study"]).value = "9.9.9"  # unknown study
    queue.cell(row=extra, column=q["Reviewer verdict"]).value = "unsure"

    sheet = workbook["Vertebrae"]
    v = _columns(sheet)
    assert v["Reviewer decision"] == 1  # first, beside the frozen panes
    rows = {
        r: (
            sheet.cell(row=r, column=v["Study"]).value,
            sheet.cell(row=r, column=v["Image"]).value,
            sheet.cell(row=r, column=v["Box row"]).value,
        )
        for r in range(2, sheet.max_row + 1)
    }
    sheet.cell(row=2, column=v["Reviewer decision"]).value = "fracture"
    sheet.cell(row=3, column=v["Reviewer decision"]).value = "No Fracture"
    sheet.cell(row=4, column=v["Reviewer decision"]).value = "perhaps"  # unknown decision
    extra = sheet.max_row + 1
    sheet.cell(row=extra, column=v["Study"]).value = rows[2][0]
    sheet.cell(row=extra, column=v["Image"]).value = rows[2][1]
    sheet.cell(row=extra, column=v["Box row"]).value = 999  # no such box
    sheet.cell(row=extra, column=v["Reviewer decision"]).value = "fracture"
    sheet.cell(row=extra + 1, column=v["Study"]).value = "9.9.9"
    sheet.cell(row=extra + 1, column=v["Reviewer decision"]).value = "unsure"
    workbook.save(workbook_path)
    return {"first": first, "second": second, "row2": rows[2], "row3": rows[3]}


def _key(run: ReviewRun, row: tuple[str, str, int]) -> tuple[str, str, str]:
    study, image, box_row = row
    case = run.study(study)
    ref = next(i.ref for i in case.images if i.image == image)
    return (study, ref, box_id(int(box_row)))


def test_a_reviewed_workbook_becomes_review_events(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    workbook = fresh_run / "audit.xlsx"
    named = _fill(workbook, run)

    result = import_verdicts(fresh_run, workbook)
    assert result.reviewer == "excel"
    assert result.recorded == {"verdict": 1, "comment": 2, "decision": 2}
    assert result.unchanged == 0
    reasons = sorted(f"{p.sheet}: {p.reason.split(';')[0]}" for p in result.problems)
    assert reasons == [
        "Flagged queue: unknown study",
        "Flagged queue: verdict 'probably' is not one of 'confirmed miss', 'not a fracture', "
        "'already known', 'unsure' (or none)",
        "Vertebrae: decision 'perhaps' is not one of 'fracture', 'no_fracture', 'unsure' (or none)",
        "Vertebrae: unknown study",
        "Vertebrae: unknown vertebra box",
    ]
    assert {p.row for p in result.problems if p.sheet == "Vertebrae"} >= {4}

    with ReviewStore(fresh_run) as store:
        state = store.state("excel")
        assert state.studies[str(named["first"])].verdict is StudyVerdict.CONFIRMED_MISS
        assert state.studies[str(named["first"])].comment == "T12 <b>too</b>"
        assert state.studies[str(named["second"])].verdict is None
        assert state.studies[str(named["second"])].comment == "second look"
        decided = {key: review.decision for key, review in state.vertebrae.items()}
        assert decided == {
            _key(run, named["row2"]): VertebraDecision.FRACTURE,  # type: ignore[arg-type]
            _key(run, named["row3"]): VertebraDecision.NO_FRACTURE,  # type: ignore[arg-type]
        }
        n_events = len(store.events())

    # the same workbook again records nothing new
    again = import_verdicts(fresh_run, workbook)
    assert again.n_recorded == 0 and again.unchanged == 5 and len(again.problems) == 5
    # a decision changed in the workbench is changed back only by a different workbook value
    with ReviewStore(fresh_run) as store:
        assert len(store.events()) == n_events
        study, ref, box = _key(run, named["row2"])  # type: ignore[arg-type]
        store.record("excel", Field.DECISION, "unsure", study=study, image=ref, box=box)
    third = import_verdicts(fresh_run, workbook)
    assert third.recorded == {"verdict": 0, "comment": 0, "decision": 1}


def test_import_verdicts_command(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    workbook = fresh_run / "audit.xlsx"
    _fill(workbook, run)
    args = ["import-verdicts", str(fresh_run), str(workbook), "--reviewer", "qa team"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "imported for qa team: 1 verdicts, 2 comments, 2 decisions" in result.output
    assert "5 rows not imported" in result.output and "unknown vertebra box" in result.output
    with ReviewStore(fresh_run) as store:
        assert store.reviewers() == ("qa team",)
    broken = fresh_run / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    result = CliRunner().invoke(app, ["import-verdicts", str(fresh_run), str(broken)])
    assert "cannot be read as a workbook" in str(result.exception)


def test_resume_keeps_vertebra_decisions_and_never_touches_the_review(
    fresh_run: Path, scanned: Path, review_bundle: Path
) -> None:
    """A workbook that holds only vertebra decisions is kept by ``scan --resume`` and its
    decisions are carried into the new one; ``review.sqlite`` is left byte for byte."""
    run = load_run(fresh_run)
    workbook_path = fresh_run / "audit.xlsx"
    workbook = openpyxl.load_workbook(workbook_path)
    sheet = workbook["Vertebrae"]
    v = _columns(sheet)
    sheet.cell(row=3, column=v["Reviewer decision"]).value = "unsure"
    key = tuple(sheet.cell(row=3, column=v[name]).value for name in ("Study", "Image", "Box row"))
    workbook.save(workbook_path)
    with ReviewStore(fresh_run) as store:
        store.record("alice", "verdict", "unsure", study=run.studies[0].key)
    review = (fresh_run / REVIEW_DB_NAME).read_bytes()

    world = scanned.parent / "world"  # as tests/helpers/review_world.py scanned it
    result = run_scan(
        ScanConfig(
            archive=world / "archive",
            out=fresh_run,
            boxes=world / "boxes.csv",
            reads=world / "reads.csv",
            model=review_bundle,
            threshold=0.9,
            device="cpu",
            batch_size=8,
            workers=0,
            heatmaps=HeatmapMode.ALL,
            resume=True,
        )
    )
    kept = fresh_run / "audit.reviewed-1.xlsx"
    assert result.reports["xlsx (the reviewed workbook, kept)"] == kept
    new = openpyxl.load_workbook(result.reports["xlsx"])["Vertebrae"]
    rows = {
        tuple(row[v[name] - 1] for name in ("Study", "Image", "Box row")): row[0]
        for row in new.iter_rows(min_row=2, values_only=True)
    }
    assert rows[key] == "unsure"
    assert sum(value is not None for value in rows.values()) == 1
    assert (fresh_run / REVIEW_DB_NAME).read_bytes() == review


@pytest.mark.parametrize("reviewer", ["", "x" * 65])
def test_a_bad_reviewer_name_is_refused(fresh_run: Path, reviewer: str) -> None:
    from auditor.errors import ReviewError

    with pytest.raises(ReviewError, match="is not 1 to 64"):
        import_verdicts(fresh_run, fresh_run / "audit.xlsx", reviewer)
