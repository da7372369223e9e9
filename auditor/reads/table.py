"""A reads export as a header and rows of cells: CSV in any common encoding and delimiter, or
``.xlsx``.

Hospitals export reads from their RIS or PACS in whatever their system writes. This module
finds out how the file is written and says so (:attr:`RawTable.encoding`,
:attr:`RawTable.delimiter`), so that the person who gave it can check:

* **Encoding**: a byte-order mark decides (UTF-8 with BOM, UTF-16); otherwise text that is valid
  UTF-8 is UTF-8; otherwise charset-normalizer (:func:`charset_normalizer.from_bytes`) names it,
  in practice Windows-1252 or Latin-1 for a Western European export.
* **Delimiter**: the one of ``,`` ``;`` tab and ``|`` that the header line holds most often
  (outside quotes); a header with none of them is one column.
* **Workbooks**: the first worksheet of an ``.xlsx`` file (openpyxl, read-only), first row the
  header. Cells keep their types (text, number, date, true/false), so that a column of mixed
  types is caught row by row later (:mod:`auditor.reads.file`).

A file that is missing, empty, binary, a ZIP archive other than a workbook, or has no header
raises :class:`~auditor.errors.InputFileError`; a row with more cells than the header becomes a
:class:`~auditor.records.RowError`. Cell contents are never logged.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputFileError
from auditor.records import RowError

#: A cell as read: text from a CSV; text, number, date or true/false from a workbook; None empty.
Cell = str | int | float | bool | datetime.datetime | datetime.date | datetime.time | None

DELIMITERS = (",", ";", "\t", "|")
#: Names the summary uses for the delimiters.
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", "": "none (xlsx)"}
#: The largest reads file read (a larger one is refused before it is read).
MAX_FILE_BYTES = 2 * 1024**3
#: Encodings tried first when a file is not UTF-8 and has no byte-order mark.
_EXPORT_ENCODINGS = ("cp1252", "latin_1", "utf_16_le", "utf_16_be")
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # the legacy .xls format


@dataclass(frozen=True)
class RawTable:
    """A reads export as read: ``header`` as written, ``rows`` as (1-based data row, cells) with
    blank rows left out, ``encoding`` and ``delimiter`` as found ("xlsx" and "" for a
    workbook), and the rows that could not be split into cells as ``errors``."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[Cell, ...]], ...]
    encoding: str
    delimiter: str
    errors: tuple[RowError, ...] = ()

    @property
    def delimiter_name(self) -> str:
        return DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))


def read_table(path: Path) -> RawTable:
    """Read a reads export (CSV or ``.xlsx``) as a :class:`RawTable`.

    Raises
    ------
    InputFileError
        When the file is missing, empty, too large, binary, a ZIP archive that is no workbook, a
        legacy ``.xls`` workbook, or has no header row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"reads file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(f"reads file {path} is empty; expected a CSV or .xlsx table")
    if size > MAX_FILE_BYTES:
        raise InputFileError(
            f"reads file {path} is {size / 1024**3:.1f} GB; tlaudit reads at most "
            f"{MAX_FILE_BYTES / 1024**3:.0f} GB (split the export)"
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(_ZIP_MAGIC):
        return _read_xlsx(path)
    if head.startswith(_OLE_MAGIC):
        raise InputFileError(
            f"reads file {path} is a legacy Excel (.xls) workbook; save it as .xlsx or CSV"
        )
    return _read_csv(path, path.read_bytes())


# -- CSV --------------------------------------------------------------------------------------


def decode(data: bytes, path: Path) -> tuple[str, str]:
    """The text of ``data`` and the name of its encoding (see the module docstring).

    Raises
    ------
    InputFileError
        When the bytes are binary (NUL bytes outside UTF-16) or no encoding fits.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as err:
            raise InputFileError(f"reads file {path} starts as UTF-16 but is not: {err}") from err
    try:
        text = data.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        text, encoding = _detected(data, path)
    if "\x00" in text:
        raise InputFileError(
            f"reads file {path} holds binary data (NUL bytes); expected a CSV text or .xlsx file"
        )
    return text, encoding


def _detected(data: bytes, path: Path) -> tuple[str, str]:
    """charset-normalizer's guess among the encodings exports use (UTF-16 without a byte-order
    mark, Windows-1252, Latin-1), then among all it knows."""
    from charset_normalizer import from_bytes

    sample = data[: 1024 * 1024]
    guess = from_bytes(sample, cp_isolation=list(_EXPORT_ENCODINGS)).best()
    if guess is None:
        guess = from_bytes(sample).best()
    if guess is None or not guess.encoding:
        raise InputFileError(
            f"reads file {path} is not text in any encoding tlaudit can detect (expected UTF-8, "
            "UTF-16, Windows-1252 or Latin-1); it may be binary"
        )
    encoding = codecs.lookup(guess.encoding).name
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        # the guess was made on the first megabyte; Latin-1 decodes any byte
        return data.decode("latin-1"), "latin-1"


def sniff_delimiter(header_line: str) -> str:
    """The delimiter a header line uses most often outside quotes (``,`` when it has none)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, data: bytes) -> RawTable:
    text, encoding = decode(data, path)
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if not first.strip():
        raise InputFileError(f"reads file {path} holds no header row")
    delimiter = sniff_delimiter(first)
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))  # a long report is a row's problem, later
    try:
        reader = csv.reader(io.StringIO(text.lstrip("\r\n"), newline=""), delimiter=delimiter)
        try:
            header = tuple(cell.strip() for cell in next(reader))
            rows: list[tuple[int, tuple[Cell, ...]]] = []
            errors: list[RowError] = []
            for number, cells in enumerate(reader, start=1):
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
                    errors.append(
                        RowError(
                            number,
                            f"has {len(cells)} cells but the header has {len(header)} columns "
                            f"(delimiter: {DELIMITER_NAMES[delimiter]}); is a quote missing?",
                            source="reads file",
                        )
                    )
                    continue
                rows.append((number, tuple(cells[: len(header)])))
        except csv.Error as err:
            raise InputFileError(f"reads file {path} is not valid CSV: {err}") from err
    finally:
        csv.field_size_limit(limit)
    return RawTable(path, header, tuple(rows), encoding, delimiter, tuple(errors))


# -- workbooks --------------------------------------------------------------------------------


def _read_xlsx(path: Path) -> RawTable:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile as err:
        raise InputFileError(f"reads file {path} starts as a ZIP archive but is broken") from err
    if "xl/workbook.xml" not in names:
        raise InputFileError(
            f"reads file {path} is a ZIP archive, not a CSV or .xlsx reads file; unpack it and "
            "give the table inside"
        )
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise InputFileError(f"reads file {path} cannot be read as a workbook: {err}") from err
    try:
        sheet = book.worksheets[0]
        values = sheet.iter_rows(values_only=True)
        header_cells = next(values, None)
        if header_cells is None or not any(c is not None for c in header_cells):
            raise InputFileError(f"reads file {path}: the first worksheet has no header row")
        header = tuple("" if c is None else str(c).strip() for c in header_cells)
        rows: list[tuple[int, tuple[Cell, ...]]] = []
        for number, cells in enumerate(values, start=1):
            if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
                continue
            padded = tuple(cells[: len(header)]) + (None,) * (len(header) - len(cells))
            rows.append((number, padded))
    finally:
        book.close()
    return RawTable(path, header, tuple(rows), "xlsx", "")
