"""Reading a reads export as cells: encodings, delimiters, workbooks, and files that are none."""

from __future__ import annotations

import datetime
import zipfile
from pathlib import Path

import pytest

from auditor.errors import InputFileError
from auditor.reads.table import read_table, sniff_delimiter

GERMAN = "Befund: Höhenminderung LWK 1, ältere Fraktur BWK 12, Übergang unauffällig"
FRENCH = "Tassement récent de L1, fracture ancienne de D12 à 20 %, pas d'autre lésion"


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        ("utf-8", {"utf-8"}),
        ("utf-8-sig", {"utf-8-sig"}),
        ("utf-16", {"utf-16"}),
        ("cp1252", {"cp1252", "latin-1", "iso8859-1", "iso8859-15"}),
        ("latin-1", {"cp1252", "latin-1", "iso8859-1", "iso8859-15"}),
    ],
)
def test_encodings_are_detected_and_text_survives(
    tmp_path: Path, codec: str, expected: set[str]
) -> None:
    text = f"accession;report\r\nA1;{GERMAN}\r\nA2;{FRENCH}\r\n"
    path = tmp_path / "reads.csv"
    path.write_bytes(text.encode(codec))
    table = read_table(path)
    assert table.encoding.replace("_", "-") in expected
    assert table.delimiter == ";"
    assert table.header == ("accession", "report")
    assert [cells for _, cells in table.rows] == [("A1", GERMAN), ("A2", FRENCH)]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed_from_the_header(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "reads.csv"
    report = '"Fracture of L1, T12 intact; no other finding | none"'
    path.write_text(f"AccessionNumber{delimiter}Report\nA1{delimiter}{report}\n", "utf-8")
    table = read_table(path)
    assert table.delimiter == delimiter
    assert table.rows == ((1, ("A1", "Fracture of L1, T12 intact; no other finding | none")),)


def test_sniff_ignores_delimiters_inside_quotes() -> None:
    assert sniff_delimiter('"a;b;c",d,e') == ","
    assert sniff_delimiter("single column") == ","


def test_blank_rows_are_skipped_and_extra_cells_are_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "reads.csv"
    path.write_text("acc,report\nA1,ok\n,\nA2,broken,extra\nA3,short\n", "utf-8")
    table = read_table(path)
    assert [number for number, _ in table.rows] == [1, 4]
    assert len(table.errors) == 1 and table.errors[0].row == 3
    assert "has 3 cells but the header has 2" in table.errors[0].reason


def test_xlsx_keeps_cell_types(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Accession Number", "Befundtext", "Fraktur"])
    sheet.append([12345, "Keilwirbel LWK 1.", True])
    sheet.append(["A2", None, datetime.datetime(2020, 1, 2)])
    sheet.append([None, None, None])
    path = tmp_path / "reads.xlsx"
    book.save(path)
    table = read_table(path)
    assert table.encoding == "xlsx" and table.delimiter == ""
    assert table.header == ("Accession Number", "Befundtext", "Fraktur")
    assert table.rows == (
        (1, (12345, "Keilwirbel LWK 1.", True)),
        (2, ("A2", None, datetime.datetime(2020, 1, 2))),
    )


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("reads.csv", "accession,report\nA1,x\n")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\x00\x01\x02\x03binary\x00\xff\xfe\x00garbage" * 50, "binary"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "legacy Excel"),
        (b"\n\n  \n", "no header row"),
    ],
)
def test_files_that_are_no_table_raise(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "reads.csv"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=message):
        read_table(path)


def test_a_zip_that_is_no_workbook_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="is a ZIP archive, not a CSV or"):
        read_table(_zip(tmp_path / "reads.zip"))


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_table(tmp_path / "none.csv")
