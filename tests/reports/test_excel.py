"""The workbook on its own: the queue's column order and frozen panes, the print setup of every
sheet, and image links relative to the run folder (never ``file:///`` paths)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import unquote

import openpyxl
import pytest

from auditor.records import AuditReport
from auditor.reports.excel import write_excel
from auditor.scan.assemble import _run_relative_link
from tests.reports.test_html import _report

# what a file name in an archive may hold: a space, a URI fragment and query mark, a percent sign
AWKWARD_NAME = "a #1 ?50%.dcm"


def _linked_world(tmp_path: Path) -> tuple[Path, Path, AuditReport]:
    """A run folder beside an archive holding one real image, and a report whose study links it."""
    run_dir = tmp_path / "runs" / "run1"
    run_dir.mkdir(parents=True)
    image = tmp_path / "archive" / "FAKE-000" / AWKWARD_NAME
    image.parent.mkdir(parents=True)
    image.write_bytes(b"not really a DICOM")
    report = _report(run_dir, 2)
    study = dataclasses.replace(
        report.studies[0],
        images=(f"FAKE-000/{AWKWARD_NAME}",),
        image_path=_run_relative_link(image, run_dir),
    )
    report = dataclasses.replace(report, studies=(study, *report.studies[1:]))
    return run_dir, image, report


def _workbook(tmp_path: Path) -> tuple[Path, Path, openpyxl.Workbook]:
    run_dir, image, report = _linked_world(tmp_path)
    target = run_dir / "audit.xlsx"
    write_excel(report, run_dir, target)
    return run_dir, image, openpyxl.load_workbook(target)


def test_queue_starts_with_rank_status_and_the_verdict_columns(tmp_path: Path) -> None:
    _, _, workbook = _workbook(tmp_path)
    queue = workbook["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    assert headers[:4] == ["Rank", "Status", "Reviewer verdict", "Comment"]
    assert headers[4] == "Priority"  # then the rest in their old order
    assert queue.freeze_panes == "E2"
    assert queue.auto_filter.ref == f"A1:{queue.cell(row=1, column=len(headers)).column_letter}3"
    (validation,) = queue.data_validations.dataValidation
    assert str(validation.sqref).startswith("C2:")  # the drop-down moved with its column
    assert [queue.cell(row=r, column=1).value for r in (2, 3)] == [1, 2]
    assert all(queue.cell(row=r, column=c).value is None for r in (2, 3) for c in (3, 4))


def test_every_sheet_prints_landscape_one_page_wide_with_its_header(tmp_path: Path) -> None:
    _, _, workbook = _workbook(tmp_path)
    assert workbook.sheetnames == ["Summary", "Flagged queue", "Vertebrae", "Files", "Errors"]
    for sheet in workbook.worksheets:
        assert sheet.page_setup.orientation == "landscape", sheet.title
        assert sheet.sheet_properties.pageSetUpPr.fitToPage, sheet.title
        assert sheet.page_setup.fitToWidth == 1, sheet.title
        assert sheet.page_setup.fitToHeight == 0, sheet.title
        assert sheet.print_title_rows == "$1:$1", sheet.title


def test_image_link_is_relative_to_the_run_folder(tmp_path: Path) -> None:
    run_dir, image, workbook = _workbook(tmp_path)
    queue = workbook["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    cell = queue.cell(row=2, column=headers.index("Image") + 1)
    assert cell.value == f"FAKE-000/{AWKWARD_NAME}"  # the text stays the archive-relative path
    assert cell.hyperlink is not None
    link = cell.hyperlink.target
    assert link.startswith("../../archive/")
    assert "#" not in link and "?" not in link and " " not in link  # a URI reference
    assert (run_dir / unquote(link)).resolve() == image.resolve()


def test_a_moved_run_folder_and_archive_keep_the_link(tmp_path: Path) -> None:
    run_dir, _, workbook = _workbook(tmp_path / "before")
    queue = workbook["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    link = queue.cell(row=2, column=headers.index("Image") + 1).hyperlink
    assert link is not None
    (tmp_path / "before").rename(tmp_path / "after")
    moved = tmp_path / "after" / run_dir.relative_to(tmp_path / "before")
    assert (moved / unquote(link.target)).is_file()


def test_no_hyperlink_is_a_file_uri(tmp_path: Path) -> None:
    _, _, workbook = _workbook(tmp_path)
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                if cell.hyperlink is not None:
                    assert not (cell.hyperlink.target or "").lower().startswith("file:")


def test_a_study_without_a_link_gets_no_hyperlink(tmp_path: Path) -> None:
    # image_path is "" when pseudonymised: the cell keeps its text and links nowhere
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_excel(_report(run_dir, 1), run_dir, run_dir / "audit.xlsx")
    queue = openpyxl.load_workbook(run_dir / "audit.xlsx")["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    cell = queue.cell(row=2, column=headers.index("Image") + 1)
    assert cell.value == "s0.dcm" and cell.hyperlink is None


@pytest.mark.parametrize(
    ("image", "run_dir", "expected"),
    [
        ("/data/archive/p1/x.dcm", "/data/runs/r1", "../../archive/p1/x.dcm"),
        ("/data/runs/r1/archive/x.dcm", "/data/runs/r1", "archive/x.dcm"),
        ("/data/archive/p1/x.dcm", "/data/archive/out", "../p1/x.dcm"),
    ],
)
def test_run_relative_link(image: str, run_dir: str, expected: str) -> None:
    assert _run_relative_link(Path(image), Path(run_dir)) == expected
