"""Spreadsheet safety: formula-like text stays text in xlsx and is neutralised in CSV."""

from __future__ import annotations

import zipfile
from pathlib import Path

import openpyxl
import pytest

from auditor.files import atomic_path, csv_safe, is_formula_like, write_text_atomic
from auditor.reports.cells import put, safe_cell, write_table

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_like_text_is_stored_as_text(tmp_path: Path, text: str) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    cell = put(sheet, 1, 1, text)
    assert cell.data_type == "s"
    path = tmp_path / "t.xlsx"
    workbook.save(path)
    xml = zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in xml  # no formula element anywhere
    back = openpyxl.load_workbook(path).active
    assert back is not None
    assert back["A1"].value == text.replace("\r", "\n") or back["A1"].value == text
    assert back["A1"].data_type == "s"


def test_plain_values_pass_through() -> None:
    assert safe_cell(3) == 3
    assert safe_cell(0.5) == 0.5
    assert safe_cell(None) is None
    assert safe_cell(Path("a") / "b") == "a/b"
    assert safe_cell("bad\x00char\x07") == "bad\ufffdchar\ufffd"
    assert not is_formula_like("Smith^John")


@pytest.mark.parametrize("text", HOSTILE)
def test_csv_safe_prefixes_formulas(text: str) -> None:
    assert csv_safe(text) == "'" + text
    assert csv_safe("plain") == "plain"
    assert csv_safe(-1.5) == -1.5


def test_write_table_styles_header(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    last = write_table(sheet, ("Name", "Value"), [("a", 1), ("=b", 2)])
    assert last == 3
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:B3"
    assert sheet["A1"].font.bold
    assert sheet["A3"].data_type == "s"


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_text_atomic(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("killed")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
