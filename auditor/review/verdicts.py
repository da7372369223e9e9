"""``import-verdicts``: a reviewed ``audit.xlsx`` read back into the run's review store.

A QA team that prefers the workbook to the workbench loses nothing: the Flagged queue's *Reviewer
verdict* and *Comment* and the Vertebrae sheet's *Reviewer decision*
(:mod:`auditor.reports.excel`) become review events under one reviewer's name, exactly as if they
had been entered in the workbench.

Rules:

* An empty cell says nothing: it never clears what the store holds.
* A value equal to what the store holds now is skipped, so importing the same workbook twice
  records nothing the second time.
* A row that cannot be imported (unknown verdict or decision text, a study or box the run does
  not hold, a comment too long) is a counted :class:`ImportProblem` with its reason; the import
  goes on.
* A vertebra row names its box by the sheet's *Study*, *Image* and *Box row* cells, as the
  scan wrote them.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputFileError, ReviewError
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import Field, ReviewStore, box_id, check_reviewer, check_value

logger = logging.getLogger(__name__)

#: The reviewer name workbook imports are recorded under unless told otherwise.
EXCEL_REVIEWER = "excel"


@dataclass(frozen=True)
class ImportProblem:
    """A workbook row that was not imported: where it is and why."""

    sheet: str
    row: int | None  # the sheet row, None when the reader does not say
    item: str  # the study, or "study / image / box row"
    reason: str

    def __str__(self) -> str:
        where = f"{self.sheet} row {self.row}" if self.row else self.sheet
        return f"{where} ({self.item}): {self.reason}"


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_verdicts` did: events recorded by field, values already in the store,
    and the rows it could not import."""

    reviewer: str
    recorded: dict[str, int]  # by field: "verdict", "comment", "decision"
    unchanged: int
    problems: tuple[ImportProblem, ...]

    @property
    def n_recorded(self) -> int:
        return sum(self.recorded.values())


def import_verdicts(run_dir: Path, workbook: Path, reviewer: str = EXCEL_REVIEWER) -> ImportResult:
    """Record a workbook's verdicts, comments and vertebra decisions in the run's review store.

    Parameters
    ----------
    run_dir
        The scan's run folder (``review.sqlite`` is created there if it is not yet).
    workbook
        The reviewed ``audit.xlsx`` (of this run, or a copy of it).
    reviewer
        The name the events are recorded under.

    Raises
    ------
    InputFileError
        When the run folder or the workbook cannot be read.
    ReviewError
        When the reviewer name is not valid.
    """
    from auditor.reports.excel import read_decisions, read_verdicts  # openpyxl: only here

    name = check_reviewer(reviewer)
    run = load_run(run_dir)
    try:
        verdicts = read_verdicts(workbook)
        decisions = read_decisions(workbook)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise InputFileError(f"{workbook} cannot be read as a workbook: {err}") from err

    recorded = {"verdict": 0, "comment": 0, "decision": 0}
    unchanged = 0
    problems: list[ImportProblem] = []
    studies = {case.key for case in run.studies}
    boxes = _box_keys(run)
    with ReviewStore(run.run_dir) as store:

        def put(field: Field, text: object, study: str, image: str = "", box: str = "") -> bool:
            """Record one value unless the store holds it already; True when recorded."""
            nonlocal unchanged
            value = check_value(field, text)
            if store.current(name, field, study=study, image=image, box=box) == value:
                unchanged += 1
                return False
            store.record(name, field, value, study=study, image=image, box=box)
            recorded[field.value] += 1
            return True

        for study, (verdict, comment) in verdicts.items():
            if study not in studies:
                problems.append(ImportProblem("Flagged queue", None, study, "unknown study"))
                continue
            for field, text in ((Field.VERDICT, verdict.strip().lower()), (Field.COMMENT, comment)):
                if not text:
                    continue
                try:
                    put(field, text, study)
                except ReviewError as err:
                    problems.append(ImportProblem("Flagged queue", None, study, str(err)))
        for row in decisions:
            item = f"{row.study} / {row.image} / box row {row.box_row}"
            key = boxes.get((row.study, row.image, _whole(row.box_row)))
            if key is None:
                reason = "unknown study" if row.study not in studies else "unknown vertebra box"
                problems.append(ImportProblem("Vertebrae", row.row, item, reason))
                continue
            try:
                put(Field.DECISION, row.decision.strip().lower().replace(" ", "_"), *key)
            except ReviewError as err:
                problems.append(ImportProblem("Vertebrae", row.row, item, str(err)))
    for problem in problems:
        logger.warning("%s: not imported: %s", workbook, problem)
    return ImportResult(
        reviewer=name, recorded=recorded, unchanged=unchanged, problems=tuple(problems)
    )


def _box_keys(run: ReviewRun) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    """(study, image as the reports show it, box row as text) -> (study, image ref, box id)."""
    return {
        (case.key, image.image, str(finding.box_row)): (
            case.key,
            image.ref,
            box_id(finding.box_row),
        )
        for case in run.studies
        for image in case.images
        for finding in image.vertebrae
    }


def _whole(text: str) -> str:
    """A box row as the scan wrote it, also when a spreadsheet turned 5 into 5.0."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text
