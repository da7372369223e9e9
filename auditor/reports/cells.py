"""Spreadsheet safety and table styling shared by every Excel and CSV report.

Strings in our reports come from DICOM headers, file names and user CSV files: untrusted text. A
value such as ``=HYPERLINK("http://evil", "click")`` or ``+cmd|' /C calc'!A0`` must never become a
formula when a QA reviewer opens a report (OWASP "CSV injection"). Two defences:

* in ``.xlsx`` workbooks every string is stored as a text cell (``t="inlineStr"``), never a formula,
  and text that starts like a formula (``=``, ``+``, ``-``, ``@``, tab, carriage return) also gets
  Excel's quote prefix so editing the cell keeps it text (:func:`put`);
* in CSV files, which a spreadsheet re-parses, such text is prefixed with an apostrophe
  (:func:`auditor.files.csv_safe`), the usual neutralisation.

The styling helpers give every tlaudit sheet the same look: a bold filled header row that is frozen,
an auto filter over the table, and column widths that fit the content within limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import PurePath
from typing import Any

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from auditor.files import is_formula_like, strip_bidi

EXCEL_MAX_CELL_CHARS = 32767

HEADER_FONT = Font(bold=True, color="FFFFFF")
HEADER_FILL = PatternFill("solid", fgColor="1F4E79")
HEADER_ALIGNMENT = Alignment(vertical="center", wrap_text=True)


def safe_cell(value: Any) -> Any:
    """Return ``value`` in a form that is safe and valid to store in a spreadsheet cell.

    Strings lose the control characters the xlsx format cannot hold (replaced by U+FFFD) and the
    bidirectional controls that would show them in another order than stored
    (:func:`auditor.files.strip_bidi`), and are cut to Excel's cell limit; enums and paths become
    their text; numbers, booleans and None pass
    through. The result is still stored as text by :func:`put`, which is what keeps a formula-like
    string inert.

    Parameters
    ----------
    value
        Any value a report wants to show.

    Returns
    -------
    object
        A str, int, float, bool or None.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, PurePath):
        value = value.as_posix()
    text = strip_bidi(ILLEGAL_CHARACTERS_RE.sub("\ufffd", str(value)))
    return text[:EXCEL_MAX_CELL_CHARS]


def put(ws: Worksheet, row: int, column: int, value: Any, number_format: str | None = None) -> Cell:
    """Write one value into ``ws`` so that a string can never become a formula.

    Parameters
    ----------
    ws
        Target worksheet.
    row, column
        1-based cell coordinates.
    value
        Value to store (passed through :func:`safe_cell`).
    number_format
        Optional Excel number format, e.g. ``"0.000"``.

    Returns
    -------
    openpyxl.cell.cell.Cell
        The written cell.
    """
    cell = ws.cell(row=row, column=column)
    clean = safe_cell(value)
    cell.value = clean
    if isinstance(clean, str):
        cell.data_type = "s"  # openpyxl would make "=..." a formula; force text
        if is_formula_like(clean):
            cell.quotePrefix = True
    if number_format is not None:
        cell.number_format = number_format
    return cell


def write_table(
    ws: Worksheet,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    number_formats: dict[str, str] | None = None,
    start_row: int = 1,
) -> int:
    """Write a header row and data rows, styled the tlaudit way (see :func:`finish_table`).

    Parameters
    ----------
    ws
        Target worksheet.
    headers
        Column titles.
    rows
        Data rows, each with one value per header.
    number_formats
        Optional map from header to Excel number format.
    start_row
        Row of the header (1-based).

    Returns
    -------
    int
        The index of the last row written.
    """
    formats = number_formats or {}
    for col, title in enumerate(headers, start=1):
        put(ws, start_row, col, title)
    row_idx = start_row
    for row_idx, values in enumerate(rows, start=start_row + 1):
        for col, (title, value) in enumerate(zip(headers, values, strict=True), start=1):
            put(ws, row_idx, col, value, formats.get(title))
    finish_table(ws, len(headers), start_row, row_idx)
    return row_idx


def finish_table(
    ws: Worksheet,
    n_columns: int,
    header_row: int,
    last_row: int,
    max_width: int = 60,
    min_width: int = 8,
) -> None:
    """Style the header row, freeze panes below it, add an auto filter, and size the columns.

    Parameters
    ----------
    ws
        Worksheet holding the table.
    n_columns
        Number of table columns (starting at column A).
    header_row
        Row of the header.
    last_row
        Last data row (equal to ``header_row`` for an empty table).
    max_width, min_width
        Column width limits, in characters.
    """
    for col in range(1, n_columns + 1):
        cell = ws.cell(row=header_row, column=col)
        cell.font = HEADER_FONT
        cell.fill = HEADER_FILL
        cell.alignment = HEADER_ALIGNMENT
    ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
    last_col = get_column_letter(n_columns)
    ws.auto_filter.ref = f"A{header_row}:{last_col}{max(last_row, header_row)}"
    # Width from the header and the first few hundred rows: enough to fit, cheap on big sheets.
    sample_end = min(last_row, header_row + 300)
    for col in range(1, n_columns + 1):
        longest = 0
        for row in range(header_row, sample_end + 1):
            value = ws.cell(row=row, column=col).value
            if value is not None:
                longest = max(longest, max(len(part) for part in str(value).split("\n")))
        width = min(max(longest + 2, min_width), max_width)
        ws.column_dimensions[get_column_letter(col)].width = width
