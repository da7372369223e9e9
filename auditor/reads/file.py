"""The reads file as :class:`~auditor.records.ReadRow` rows and named row errors.

One row per study. What a row needs: a study key (accession number, Study Instance UID or an
archive-relative image path) and what the read said, as report text, as the structured columns
(``fracture_reported`` yes/no and ``reported_levels``), or both
(:mod:`auditor.reads.columns` says which column is which).

* The structured yes/no accepts :data:`YES` and :data:`NO` in any case (yes/no, y/n, true/false,
  1/0, ja/nein, oui/non, si/no, positive/negative...), and a workbook's true/false and 1/0 cells.
* The report text is parsed (:class:`~auditor.reads.text.ReportParser`): every level it mentions
  as affirmed, old or uncertain is reported; a study-wide affirmed fracture ("fracture: yes"
  without a level) reports the study.
* With both, the read reports what either reports, and :attr:`~auditor.records.ReadRow.
  disagreement` says where they differ: one says fracture and the other not, or they name
  different levels.

A row becomes a :class:`~auditor.records.RowError` (counted and listed by the scan, never
stopping it) when it has no key, a yes/no that is neither, an unknown level, levels with "no",
a repeated key, a cell of the wrong type (a date where text is expected), or a report text that
is binary or longer than :data:`MAX_REPORT_CHARS`. Neither the errors nor the log ever quote a
report's text.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditor.boxes import archive_key
from auditor.errors import InputFileError
from auditor.reads.columns import KEY_ROLES, ColumnMap, map_columns
from auditor.reads.rules import fold
from auditor.reads.table import Cell, RawTable, read_table
from auditor.reads.text import ReportParser
from auditor.records import InputTable, LevelMention, ReadRow, RowError
from auditor.vocab import STUDY_WIDE, Level, Mention

logger = logging.getLogger(__name__)

#: Structured yes/no values, compared after folding case and accents.
YES = frozenset(
    {"yes", "y", "true", "t", "1", "positive", "pos", "+", "ja", "j", "oui", "si",
     "vero", "verdadero", "wahr", "vrai", "x"}
)  # fmt: skip
NO = frozenset(
    {"no", "n", "false", "f", "0", "negative", "neg", "-", "nein", "non", "falso", "faux",
     "falsch"}
)  # fmt: skip
#: The longest report text read; a longer one is an error row (no report runs to megabytes).
MAX_REPORT_CHARS = 100_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class ReadsInfo:
    """How a reads file was read, for the summary: encoding, delimiter, column mapping, and the
    counts of the text's mentions by kind."""

    encoding: str
    delimiter: str
    columns: tuple[str, ...]  # ColumnMap.describe()
    mention_counts: Mapping[str, int] = field(default_factory=dict)
    with_text: int = 0
    with_structured: int = 0
    disagreements: int = 0

    def lines(self) -> list[str]:
        """The summary lines a person reads before trusting the file."""
        counts = ", ".join(f"{self.mention_counts.get(m.value, 0)} {m.value}" for m in Mention)
        return [
            f"encoding: {self.encoding}",
            f"delimiter: {self.delimiter}",
            *(f"column {line}" for line in self.columns),
            f"rows with report text: {self.with_text}; with structured columns: "
            f"{self.with_structured}; text and structure disagree: {self.disagreements}",
            f"mentions: {counts}",
        ]


@dataclass(frozen=True)
class ReadsFile(InputTable[ReadRow]):
    """A reads file: the valid reads, the rejected rows, and how it was read (``info``)."""

    info: ReadsInfo | None = None


class _RowError(ValueError):
    """Raised inside row parsing; becomes a RowError."""


def read_reads(
    path: Path,
    mapping: Mapping[str, Sequence[str]] | None = None,
    parser: ReportParser | None = None,
) -> ReadsFile:
    """Read and validate a reads file (CSV or ``.xlsx``), parsing its report text.

    Parameters
    ----------
    path
        The export (:mod:`auditor.reads.table` reads it).
    mapping
        Role -> column names the user gave (:func:`auditor.reads.columns.parse_mapping`).
    parser
        The report parser (a new one with the shipped rules when None).

    Returns
    -------
    ReadsFile
        Valid rows as :class:`ReadRow`, rejected rows as :class:`~auditor.records.RowError`.

    Raises
    ------
    InputFileError
        When the file cannot be read as a table, or lacks every key column, or has neither
        report text nor a ``fracture_reported`` column.
    """
    table = read_table(Path(path))
    key_values = {
        k: [str(cells[k]) for _, cells in table.rows[:200] if cells[k] is not None]
        for k in range(len(table.header))
    }
    columns = map_columns(table.header, mapping, key_values, table.path)
    _check_columns(table, columns)
    parser = parser or ReportParser()
    reads: list[ReadRow] = []
    errors: list[RowError] = list(table.errors)
    seen: dict[tuple[str, str], int] = {}
    kinds: Counter[str] = Counter()
    with_text = with_structured = disagreements = 0
    for number, cells in table.rows:
        try:
            read = _make_read(number, cells, columns, parser)
            for kind in KEY_ROLES:
                value = getattr(read, kind)
                if value and (kind, value) in seen:
                    raise _RowError(
                        f"{kind} {value!r} was already given in row {seen[(kind, value)]}; "
                        "one row per study, the first is kept"
                    )
            for kind in KEY_ROLES:
                if value := getattr(read, kind):
                    seen[(kind, value)] = number
        except _RowError as err:
            key = next((v for r in KEY_ROLES if (v := _text_or_empty(cells, columns, r))), "")
            errors.append(RowError(number, str(err), key=key, source="reads file"))
            continue
        reads.append(read)
        kinds.update(m.mention.value for m in read.mentions)
        with_text += bool(read.impression)
        with_structured += _has_structured(cells, columns)
        disagreements += bool(read.disagreement)
    errors.sort(key=lambda e: e.row)
    info = ReadsInfo(
        encoding=table.encoding,
        delimiter=table.delimiter_name,
        columns=tuple(columns.describe()),
        mention_counts=dict(kinds),
        with_text=with_text,
        with_structured=with_structured,
        disagreements=disagreements,
    )
    logger.info(
        "reads file %s: %d reads, %d rows rejected (%s, %s delimiter)",
        table.path,
        len(reads),
        len(errors),
        table.encoding,
        table.delimiter_name,
    )
    return ReadsFile(
        path=table.path, rows=tuple(reads), errors=tuple(errors), notes=tuple(info.lines()),
        info=info,
    )  # fmt: skip


def _check_columns(table: RawTable, columns: ColumnMap) -> None:
    found = ", ".join(repr(h) for h in table.header) or "no header"
    if not any(role in columns for role in KEY_ROLES):
        raise InputFileError(
            f"reads file {table.path}: no column to match a study by (accession number, Study "
            f"Instance UID or image); found {found}. Name one with --reads-column "
            "accession_number=COLUMN (or study_uid=, key=)"
        )
    if "text" not in columns and "fracture_reported" not in columns:
        raise InputFileError(
            f"reads file {table.path}: no report text and no fracture_reported column; found "
            f"{found}. Name one with --reads-column text=COLUMN (or fracture_reported=)"
        )


# -- one row ----------------------------------------------------------------------------------


def _cell(cells: Sequence[Cell], columns: ColumnMap, role: str) -> Cell:
    k = columns.first(role)
    return None if k is None else cells[k]


def _text_or_empty(cells: Sequence[Cell], columns: ColumnMap, role: str) -> str:
    value = _cell(cells, columns, role)
    return "" if value is None or isinstance(value, (bytes, bytearray)) else str(value).strip()


def _key_text(cells: Sequence[Cell], columns: ColumnMap, role: str) -> str:
    """A key cell as text: numbers as written (a workbook's 12345.0 is "12345"); a date or
    true/false is no key."""
    value = _cell(cells, columns, role)
    if value is None:
        return ""
    if isinstance(value, (bool, datetime.date, datetime.time)):
        raise _RowError(f"{role} is {_kind(value)}, expected text or a number")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a true/false cell ({value})"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def _has_structured(cells: Sequence[Cell], columns: ColumnMap) -> bool:
    return _cell(cells, columns, "fracture_reported") not in (None, "")


def _yes_no(value: Cell) -> bool | None:
    """The structured yes/no: True, False, or None when the cell is empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, (datetime.date, datetime.time, int, float)):
        raise _RowError(f"fracture_reported is {_kind(value)}, expected yes or no")
    word = fold(re.sub(r"[\s.]", "", str(value)).lower())
    if not word:
        return None
    if word in YES:
        return True
    if word in NO:
        return False
    shown = str(value).strip()
    raise _RowError(f"fracture_reported must be yes or no, got {shown[:40]!r}")


def _levels(value: Cell) -> tuple[Level, ...]:
    if value is None:
        return ()
    if not isinstance(value, str):
        raise _RowError(f"reported_levels is {_kind(value)}, expected level names such as T12;L1")
    levels: list[Level] = []
    for part in re.split(r"[;,/]|\s+(?=[TLSDtlsd]\s?\d)", value):
        if not part.strip():
            continue
        try:
            level = Level.parse(re.sub(r"^[Dd]", "T", part.strip()))
        except ValueError as err:
            raise _RowError(f"reported_levels: {str(err)[:120]}") from None
        if level not in levels:
            levels.append(level)
    return tuple(sorted(levels, key=lambda level: level.order))


def _report_text(cells: Sequence[Cell], columns: ColumnMap) -> str:
    parts: list[str] = []
    for k in columns.columns.get("text", ()):
        value = cells[k]
        if value is None:
            continue
        if not isinstance(value, str):
            raise _RowError(f"report text is {_kind(value)}, expected text")
        if len(value) > MAX_REPORT_CHARS:
            raise _RowError(
                f"report text is {len(value):,} characters long, more than the "
                f"{MAX_REPORT_CHARS:,} a report may have; is the column mapping right?"
            )
        if _CONTROL.search(value) or "\ufffd" in value:
            raise _RowError(
                "report text holds binary data (control characters or undecodable bytes)"
            )
        if value.strip():
            parts.append(value.strip())
    return "\n\n".join(parts)


def _make_read(
    row: int, cells: Sequence[Cell], columns: ColumnMap, parser: ReportParser
) -> ReadRow:
    accession = _key_text(cells, columns, "accession_number")
    study_uid = _key_text(cells, columns, "study_uid")
    image_text = _key_text(cells, columns, "image")
    image = ""
    if image_text:
        key = archive_key(image_text)
        if key is None:
            raise _RowError(f"image path {image_text!r} points outside the archive")
        image = key
    if not (accession or study_uid or image):
        raise _RowError("no accession_number, study_uid or image to match the study by")
    structured = _yes_no(_cell(cells, columns, "fracture_reported"))
    levels = _levels(_cell(cells, columns, "reported_levels"))
    if levels and structured is False:
        raise _RowError(
            "fracture_reported is no but reported_levels names "
            + ";".join(level.value for level in levels)
        )
    if levels and structured is None:
        structured = True
    text = _report_text(cells, columns)
    if structured is None and not text:
        what = "report text" if "text" in columns else "fracture_reported"
        raise _RowError(f"{what} is empty: the row says nothing about a fracture")
    mentions = parser.parse(text) if text else ()
    text_says, text_levels = _text_reading(mentions)
    if not text:
        text_says = None
    reported = bool(structured) or bool(text_says)
    combined = tuple(
        sorted(set(levels) | set(text_levels), key=lambda level: level.order)
    )  # fmt: skip
    return ReadRow(
        row=row,
        accession_number=accession,
        study_uid=study_uid,
        image=image,
        fracture_reported=reported,
        reported_levels=combined,
        impression=text,
        mentions=mentions,
        disagreement=_disagreement(structured, levels, text_says, text_levels, mentions),
        patient_id=_text_or_empty(cells, columns, "patient_id"),
        study_date=_date_text(cells, columns),
    )


def _date_text(cells: Sequence[Cell], columns: ColumnMap) -> str:
    """The study date as DICOM writes it (YYYYMMDD) when a workbook gives a date, else as
    written."""
    value = _cell(cells, columns, "study_date")
    if isinstance(value, datetime.datetime):
        value = value.date()
    if isinstance(value, datetime.date):
        return value.strftime("%Y%m%d")
    return _text_or_empty(cells, columns, "study_date")


def _text_reading(mentions: Sequence[LevelMention]) -> tuple[bool | None, tuple[Level, ...]]:
    """What the text says: a fracture (True), none (False) or nothing either way (None), and
    the scanned levels it reports."""
    reported = {m.level for m in mentions if m.mention.reported}
    levels = tuple(level for level in Level if level.value in reported)
    if reported:
        return True, levels
    if any(m.mention is Mention.NEGATED for m in mentions):
        return False, ()
    return None, ()


def _disagreement(
    structured: bool | None,
    levels: tuple[Level, ...],
    text_says: bool | None,
    text_levels: tuple[Level, ...],
    mentions: Sequence[LevelMention],
) -> str:
    """Where the structured columns and the report text differ ("" when they agree, or only
    one of them speaks)."""
    if structured is None or text_says is None:
        return ""

    def said(yes: bool, named: tuple[Level, ...]) -> str:
        if not yes:
            return "no fracture"
        return "fracture at " + ";".join(v.value for v in named) if named else "fracture"

    text_named = any(m.level != STUDY_WIDE and m.mention.reported for m in mentions)
    if structured != text_says or (levels and text_named and set(levels) != set(text_levels)):
        return (
            f"structured columns say {said(structured, levels)}; "
            f"report text says {said(text_says, text_levels)}"
        )
    return ""
