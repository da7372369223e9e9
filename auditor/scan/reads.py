"""The reads file: what the original radiology report said about each study.

CSV, one row per study (column names are case-insensitive)::

    accession_number, study_uid, image, fracture_reported, reported_levels, impression

A row is keyed by any one of ``accession_number``, ``study_uid`` or ``image`` (archive-relative
path of one image of the study); ``fracture_reported`` is yes/no (also true/false, 1/0, y/n);
``reported_levels`` lists the fractured levels the read named, separated by ``;`` (or ``,``), and
may be empty; ``impression`` is free text and is only shown, never parsed.

Validation never raises for one bad row: a row without any key, with a ``fracture_reported`` value
that is not yes/no, with an unknown level name, that reports levels while saying "no fracture", or
whose key repeats an earlier row becomes a :class:`~auditor.records.RowError` naming the row, and
the scan counts and lists it. Only a file that cannot be read as a table at all (missing, not UTF-8
CSV, required columns absent) raises :class:`~auditor.errors.InputFileError`.

Matching a study to its read (:class:`ReadIndex`): Study Instance UID first, then Accession
Number, then the path of any image of the study; the first key that matches wins.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from auditor.boxes import archive_key
from auditor.errors import InputFileError
from auditor.records import InputTable, ReadRow, RowError
from auditor.vocab import Level

_YES = {"yes", "y", "true", "1", "positive"}
_NO = {"no", "n", "false", "0", "negative"}
_KEYS = ("accession_number", "study_uid", "image")


#: A reads file: the reads that passed the row checks, and the rows that did not.
ReadsFile = InputTable[ReadRow]


class _RowError(ValueError):
    """Raised inside row parsing; becomes a RowError."""


def read_reads_file(path: Path) -> ReadsFile:
    """Read and validate a reads file.

    Parameters
    ----------
    path
        CSV file with the columns described in the module docstring.

    Returns
    -------
    ReadsFile
        Valid rows as :class:`ReadRow`, rejected rows as :class:`~auditor.records.RowError`.

    Raises
    ------
    InputFileError
        When the file is missing, not UTF-8 CSV, or lacks ``fracture_reported`` or every key column.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"reads file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [name.strip().lower() for name in reader.fieldnames or []]
            if "fracture_reported" not in fields or not set(_KEYS) & set(fields):
                raise InputFileError(
                    f"reads file {path}: expected a fracture_reported column and at least one of "
                    f"{', '.join(_KEYS)}; found {', '.join(fields) or 'no header'}"
                )
            reader.fieldnames = fields
            rows = list(enumerate(reader, start=1))
    except UnicodeDecodeError as err:
        raise InputFileError(f"reads file {path} is not UTF-8 text") from err
    except csv.Error as err:
        raise InputFileError(f"reads file {path} is not valid CSV: {err}") from err

    reads: list[ReadRow] = []
    errors: list[RowError] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in rows:
        record = {key: (value or "").strip() for key, value in raw.items() if key is not None}
        key_text = record.get("study_uid") or record.get("accession_number") or record.get("image")
        try:
            read = _make_read(number, record)
            for kind, value in (
                ("study_uid", read.study_uid),
                ("accession_number", read.accession_number),
                ("image", read.image),
            ):
                if value and (kind, value) in seen:
                    raise _RowError(
                        f"{kind} {value!r} was already given in row {seen[(kind, value)]}; "
                        "one row per study, the first is kept"
                    )
            for kind, value in (
                ("study_uid", read.study_uid),
                ("accession_number", read.accession_number),
                ("image", read.image),
            ):
                if value:
                    seen[(kind, value)] = number
            reads.append(read)
        except _RowError as err:
            errors.append(RowError(number, str(err), key=key_text or "", source="reads file"))
    return ReadsFile(path=path, rows=tuple(reads), errors=tuple(errors))


def _make_read(row: int, record: dict[str, str]) -> ReadRow:
    accession = record.get("accession_number", "")
    study_uid = record.get("study_uid", "")
    image_text = record.get("image", "")
    image = ""
    if image_text:
        key = archive_key(image_text)
        if key is None:
            raise _RowError(f"image path {image_text!r} points outside the archive")
        image = key
    if not (accession or study_uid or image):
        raise _RowError("no accession_number, study_uid or image to match the study by")
    reported_text = record.get("fracture_reported", "").lower()
    if reported_text in _YES:
        reported = True
    elif reported_text in _NO:
        reported = False
    else:
        raise _RowError(
            f"fracture_reported must be yes or no, got {record.get('fracture_reported', '')!r}"
        )
    levels: list[Level] = []
    for part in re.split(r"[;,]", record.get("reported_levels", "")):
        if not part.strip():
            continue
        try:
            level = Level.parse(part)
        except ValueError as err:
            raise _RowError(f"reported_levels: {err}") from None
        if level not in levels:
            levels.append(level)
    if levels and not reported:
        raise _RowError(
            "fracture_reported is no but reported_levels names "
            + ";".join(level.value for level in levels)
        )
    return ReadRow(
        row=row,
        accession_number=accession,
        study_uid=study_uid,
        image=image,
        fracture_reported=reported,
        reported_levels=tuple(sorted(levels, key=lambda level: level.order)),
        impression=record.get("impression", ""),
    )


class ReadIndex:
    """Look up a study's read by Study Instance UID, then Accession Number, then image path."""

    def __init__(self, reads: Iterable[ReadRow]) -> None:
        self._by_uid: dict[str, ReadRow] = {}
        self._by_accession: dict[str, ReadRow] = {}
        self._by_image: dict[str, ReadRow] = {}
        for read in reads:
            if read.study_uid:
                self._by_uid.setdefault(read.study_uid, read)
            if read.accession_number:
                self._by_accession.setdefault(read.accession_number, read)
            if read.image:
                self._by_image.setdefault(read.image, read)

    def match(self, study_uid: str, accession_number: str, images: Iterable[str]) -> ReadRow | None:
        """Return the read for a study, or None when no row names it.

        Parameters
        ----------
        study_uid, accession_number
            The study's keys from its DICOM headers ("" when absent).
        images
            Archive-relative paths of the study's images.
        """
        if study_uid and study_uid in self._by_uid:
            return self._by_uid[study_uid]
        if accession_number and accession_number in self._by_accession:
            return self._by_accession[accession_number]
        for image in images:
            if image in self._by_image:
                return self._by_image[image]
        return None
