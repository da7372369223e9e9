"""The scan's Excel workbook, ``audit.xlsx``.

Sheets: Summary (run parameters, model, operating point, device, counts, timings), Flagged queue
(one row per flagged study in queue order; Rank, Status and the QA team's empty ``Reviewer
verdict`` (drop-down) and ``Comment`` columns come first and stay in view, then an embedded heatmap
thumbnail and the evidence), Vertebrae (every box, with the QA team's empty ``Reviewer decision``
drop-down first; its Study, Image and Box row name the box again for ``tlaudit import-verdicts``),
Files (the triage accounting) and Errors (every rejected box row, reads row, image and crop).
Every table has a frozen, styled header row, an auto filter, fitted widths; probabilities get a
colour scale. Every sheet prints landscape, one page
wide, with its header row on each page. The queue's image link is relative to the run folder
(:attr:`~auditor.records.StudyFinding.image_path`), never a ``file:///`` path of the scanning
machine. All text goes through :func:`auditor.reports.cells.put`, so none of it can become a
formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from openpyxl import Workbook, load_workbook
from openpyxl.drawing.image import Image as XlImage
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from auditor.files import is_formula_like, write_with
from auditor.records import OUT_OF_DISTRIBUTION, AuditReport, StudyFinding, VertebraFinding
from auditor.reports.cells import finish_table, put, write_table
from auditor.vocab import StudyVerdict, VertebraDecision

VERDICTS = tuple(verdict.value for verdict in StudyVerdict)
DECISIONS = tuple(decision.value for decision in VertebraDecision)
THUMB_PX = 96
PROBABILITY_FORMAT = "0.000"

QUEUE_HEADERS = (
    "Rank",
    "Status",
    "Reviewer verdict",
    "Comment",
    "Priority",
    "Heatmap",
    "Unreported positive levels",
    "Model positive levels",
    "Level probabilities",
    "Read",
    "Impression",
    "Patient ID",
    "Patient name",
    "Accession",
    "Study date",
    "Study description",
    "Study",
    "Image",
)
#: The Flagged queue's columns that stay in view when it scrolls sideways: Rank to Comment.
QUEUE_FROZEN_COLUMNS = QUEUE_HEADERS.index("Comment") + 1
VERTEBRA_HEADERS = (
    "Reviewer decision",
    "Study",
    "Image",
    "Level",
    "Probability",
    "Call",
    "Reference label",
    "Box row",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "Box source",
    "Box confidence",
    "Heatmap",
    "Error",
)
FILE_HEADERS = (
    "Path",
    "Size (bytes)",
    "Status",
    "Reason",
    "Scan",
    "Modality",
    "Body part",
    "View position",
    "Description",
)
ERROR_HEADERS = ("Source", "Row", "Item", "Reason")


#: A reviewer's verdict and comment for one study, as the Flagged queue holds them.
Verdicts = Mapping[str, tuple[str, str]]


def read_verdicts(path: Path) -> dict[str, tuple[str, str]]:
    """The verdicts and comments a reviewer entered in a workbook's Flagged queue, by study (the
    *Study* column); columns are found by their headers, so an older layout reads too.

    Returns ``{}`` for a workbook without a Flagged queue or without any verdict or comment.

    Raises
    ------
    OSError, zipfile.BadZipFile, KeyError
        When ``path`` cannot be read as a workbook (the caller decides what that means).
    """
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        if "Flagged queue" not in workbook.sheetnames:
            return {}
        rows = workbook["Flagged queue"].iter_rows(values_only=True)
        header = [str(v) if v is not None else "" for v in next(rows, ())]
        if not {"Study", "Reviewer verdict", "Comment"} <= set(header):
            return {}
        study, verdict, comment = (
            header.index(name) for name in ("Study", "Reviewer verdict", "Comment")
        )
        found: dict[str, tuple[str, str]] = {}
        for row in rows:
            cells = [("" if v is None else str(v)) for v in row] + [""] * len(header)
            if cells[study] and (cells[verdict] or cells[comment]):
                found[cells[study]] = (cells[verdict], cells[comment])
        return found
    finally:
        workbook.close()


@dataclass(frozen=True)
class DecisionRow:
    """A reviewer's decision on one vertebra, as a Vertebrae sheet row holds it: the sheet row,
    the box it names (Study, Image, Box row; as text, unchecked) and the decision text."""

    row: int
    study: str
    image: str
    box_row: str
    decision: str

    @property
    def key(self) -> tuple[str, str, str]:
        """(study, image, box row): the box the row names."""
        return (self.study, self.image, self.box_row)


def read_decisions(path: Path) -> tuple[DecisionRow, ...]:
    """The per-vertebra decisions a reviewer entered in a workbook's Vertebrae sheet (the rows
    whose *Reviewer decision* is not empty); columns are found by their headers.

    Returns ``()`` for a workbook without that sheet or column.

    Raises
    ------
    OSError, zipfile.BadZipFile, KeyError
        When ``path`` cannot be read as a workbook (the caller decides what that means).
    """
    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        if "Vertebrae" not in workbook.sheetnames:
            return ()
        rows = workbook["Vertebrae"].iter_rows(values_only=True)
        header = [str(v) if v is not None else "" for v in next(rows, ())]
        names = ("Reviewer decision", "Study", "Image", "Box row")
        if not set(names) <= set(header):
            return ()
        decision, study, image, box_row = (header.index(name) for name in names)
        found: list[DecisionRow] = []
        for number, row in enumerate(rows, start=2):
            cells = [("" if v is None else str(v).strip()) for v in row] + [""] * len(header)
            if cells[decision]:
                found.append(
                    DecisionRow(number, cells[study], cells[image], cells[box_row], cells[decision])
                )
        return tuple(found)
    finally:
        workbook.close()


def write_excel(
    report: AuditReport,
    run_dir: Path,
    target: Path,
    verdicts: Verdicts | None = None,
    decisions: Mapping[tuple[str, str, str], str] | None = None,
) -> None:
    """Write the workbook atomically.

    Parameters
    ----------
    report
        The scan's findings.
    run_dir
        Run directory; thumbnail paths in ``report`` are relative to it.
    target
        Path of the ``.xlsx`` file.
    verdicts
        Verdicts and comments to carry into the Flagged queue, by study key (see
        :func:`read_verdicts`); a study no longer in the queue keeps its verdict only in the
        workbook it came from.
    decisions
        Vertebra decisions to carry into the Vertebrae sheet, by :attr:`DecisionRow.key`.
    """
    workbook = Workbook()
    summary = workbook.active
    assert summary is not None
    summary.title = "Summary"
    _summary_sheet(summary, report)
    _queue_sheet(workbook.create_sheet("Flagged queue"), report, run_dir, verdicts or {})
    _vertebra_sheet(workbook.create_sheet("Vertebrae"), report, decisions or {})
    write_table(
        workbook.create_sheet("Files"),
        FILE_HEADERS,
        (
            (
                f.path,
                f.size,
                f.status,
                f.reason,
                f.scan,
                f.modality,
                f.body_part,
                f.view_position,
                f.description,
            )
            for f in report.files
        ),
    )
    write_table(
        workbook.create_sheet("Errors"),
        ERROR_HEADERS,
        ((e.source, e.row, e.item, e.reason) for e in report.errors),
    )
    for sheet in workbook.worksheets:
        _print_setup(sheet)
    write_with(target, lambda tmp: workbook.save(tmp))


def _print_setup(ws: Worksheet) -> None:
    """Print the sheet landscape, one page wide and as many pages long as it takes, with the
    header row repeated on every page."""
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.print_title_rows = "1:1"


def _summary_sheet(ws: Worksheet, report: AuditReport) -> None:
    rows: list[tuple[str, object]] = list(report.summary)
    rows += [(f"Studies: {status.value}", count) for status, count in report.status_counts]
    # warnings lead the first sheet, in red, where no one opening the workbook can miss them
    warnings = [("WARNING", report.domain.banner())] if report.domain else []
    warnings += [("WARNING", report.reads_check.banner())] if report.reads_check else []
    warnings = [(item, text) for item, text in warnings if text]
    write_table(ws, ("Item", "Value"), [*warnings, *rows])
    for row in range(2, 2 + len(warnings)):
        for cell in (ws.cell(row=row, column=1), ws.cell(row=row, column=2)):
            cell.font = Font(bold=True, color="B71C1C")
            cell.fill = PatternFill("solid", fgColor="FFEBEE")
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    ws.column_dimensions["B"].width = 70


def _probability_scale(ws: Worksheet, column: int, first_row: int, last_row: int) -> None:
    if last_row < first_row:
        return
    letter = get_column_letter(column)
    ws.conditional_formatting.add(
        f"{letter}{first_row}:{letter}{last_row}",
        ColorScaleRule(
            start_type="num",
            start_value=0,
            start_color="FFFFFF",
            mid_type="num",
            mid_value=0.5,
            mid_color="FFE699",
            end_type="num",
            end_value=1,
            end_color="F8696B",
        ),
    )


def _queue_row(rank: int, study: StudyFinding, verdicts: Verdicts) -> tuple[object, ...]:
    probabilities = "; ".join(f"{lv.level.value} {lv.probability:.3f}" for lv in study.levels)
    verdict, comment = verdicts.get(study.key, (None, None))
    return (
        rank,
        study.status_text,
        verdict or None,
        comment or None,
        round(study.flag.priority, 4),
        "",
        ";".join(level.value for level in study.flag.unreported_levels),
        ";".join(level.value for level in study.flag.positive_levels),
        probabilities,
        study.read_text,
        study.read.impression if study.read else "",
        study.patient_id,
        study.patient_name,
        study.accession_number,
        study.study_date,
        study.description,
        study.key,
        study.images[0] if study.images else "",
    )


def _queue_sheet(ws: Worksheet, report: AuditReport, run_dir: Path, verdicts: Verdicts) -> None:
    headers = QUEUE_HEADERS
    for col, title in enumerate(headers, start=1):
        put(ws, 1, col, title)
    heat_col = headers.index("Heatmap") + 1
    image_col = headers.index("Image") + 1
    last = 1
    for rank, study in enumerate(report.studies, start=1):
        row = rank + 1
        last = row
        for col, value in enumerate(_queue_row(rank, study, verdicts), start=1):
            put(ws, row, col, value, PROBABILITY_FORMAT if headers[col - 1] == "Priority" else None)
        if study.image_path:
            # relative to the workbook's folder (the run folder), percent-encoded as a URI
            # reference, so "#" or "%" in a file name stays part of the path
            link = ws.cell(row=row, column=image_col)
            # a viewer URL as it is (filled and encoded by auditor.scan.viewer), else a path
            # percent-encoded as a URI reference
            viewer = study.image_path.startswith(("http://", "https://"))
            link.hyperlink = study.image_path if viewer else quote(study.image_path, safe="/")
            link.style = "Hyperlink"  # a named style resets the cell's quote prefix: set it again
            link.quotePrefix = isinstance(link.value, str) and is_formula_like(link.value)
        heatmap = _strongest_heatmap(study)
        if heatmap and (run_dir / heatmap).is_file():
            picture = XlImage(str(run_dir / heatmap))
            picture.width = picture.height = THUMB_PX
            ws.add_image(picture, f"{get_column_letter(heat_col)}{row}")
            ws.row_dimensions[row].height = THUMB_PX * 0.75 + 4  # points
    finish_table(ws, len(headers), 1, last)
    ws.freeze_panes = ws.cell(row=2, column=QUEUE_FROZEN_COLUMNS + 1)
    ws.column_dimensions[get_column_letter(heat_col)].width = THUMB_PX / 7 + 2
    verdict_col = get_column_letter(headers.index("Reviewer verdict") + 1)
    comment_col = get_column_letter(headers.index("Comment") + 1)
    ws.column_dimensions[verdict_col].width = 18
    ws.column_dimensions[comment_col].width = 40
    validation = DataValidation(
        type="list",
        formula1='"' + ",".join(VERDICTS) + '"',
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Reviewer verdict",
        error="Choose one of: " + ", ".join(VERDICTS),
    )
    ws.add_data_validation(validation)
    validation.add(f"{verdict_col}2:{verdict_col}{max(last, 2) + 200}")
    _probability_scale(ws, headers.index("Priority") + 1, 2, last)


def _strongest_heatmap(study: StudyFinding) -> str:
    """The heatmap of the highest-probability unreported level (or positive level)."""
    wanted = set(study.flag.unreported_levels) or set(study.flag.positive_levels)
    candidates = [lv for lv in study.levels if lv.level in wanted and lv.heatmap]
    if not candidates:
        return ""
    return max(candidates, key=lambda lv: lv.probability).heatmap


def _vertebra_sheet(
    ws: Worksheet, report: AuditReport, decisions: Mapping[tuple[str, str, str], str]
) -> None:
    last = write_table(
        ws,
        VERTEBRA_HEADERS,
        (
            (
                decisions.get((v.study, v.image, str(v.box_row))) or None,
                v.study,
                v.image,
                v.level.value,
                None if v.probability is None else round(v.probability, 4),
                "" if v.probability is None else _call(v),
                {None: "", 1: "fracture", 0: "no_fracture"}.get(v.reference_label, ""),
                v.box_row,
                *(round(c, 1) for c in v.box),
                v.box_source,
                v.box_confidence,
                v.heatmap,
                v.error,
            )
            for v in report.vertebrae
        ),
        number_formats={"Probability": PROBABILITY_FORMAT},
    )
    _probability_scale(ws, VERTEBRA_HEADERS.index("Probability") + 1, 2, last)
    ws.freeze_panes = ws.cell(row=2, column=VERTEBRA_HEADERS.index("Reviewer decision") + 2)
    decision_col = get_column_letter(VERTEBRA_HEADERS.index("Reviewer decision") + 1)
    ws.column_dimensions[decision_col].width = 18
    validation = DataValidation(
        type="list",
        formula1='"' + ",".join(DECISIONS) + '"',
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Reviewer decision",
        error="Choose one of: " + ", ".join(DECISIONS),
    )
    ws.add_data_validation(validation)
    validation.add(f"{decision_col}2:{decision_col}{max(last, 2)}")


def _call(v: VertebraFinding) -> str:
    """A classified vertebra's call as the reports show it, marked when out of distribution."""
    call = "positive" if v.positive else "negative"
    return f"{call}; {OUT_OF_DISTRIBUTION}" if v.out_of_distribution else call
