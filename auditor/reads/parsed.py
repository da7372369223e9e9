"""``parsed.csv``: what the report parser read in a reads file, one row per study and level.

Columns (:data:`PARSED_COLUMNS`): ``key`` (the study key the reads file used: Study Instance
UID, else accession number, else image path), ``row`` (the reads file's data row), ``level``
(T1..L5, S1, or ``*`` for a study-wide statement such as "no fracture"), ``mention``
(``affirmed``, ``old``, ``uncertain`` or ``negated``) and ``sentence`` (the sentence it came
from). A level the report does not mention has no row. Cells a spreadsheet would read as a
formula are neutralised (:func:`auditor.files.csv_safe`); the file is written atomically.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from auditor.files import atomic_path, csv_safe
from auditor.reads.file import ReadsFile, read_reads
from auditor.reads.rules import load_rules
from auditor.reads.text import ReportParser
from auditor.records import ReadRow

PARSED_COLUMNS = ("key", "row", "level", "mention", "sentence")


def parsed_rows(reads: Iterable[ReadRow]) -> list[dict[str, object]]:
    """The rows of ``parsed.csv`` for ``reads``, in file order, each study's levels in order."""
    return [
        {
            "key": read.key,
            "row": read.row,
            "level": mention.level,
            "mention": mention.mention.value,
            "sentence": mention.sentence,
        }
        for read in reads
        for mention in read.mentions
    ]


def write_parsed(reads: Iterable[ReadRow], target: Path) -> int:
    """Write ``parsed.csv`` for ``reads`` to ``target``; returns the number of rows written."""
    rows = parsed_rows(reads)
    with atomic_path(Path(target)) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PARSED_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: csv_safe(value) for key, value in row.items()})
    return len(rows)


def parse_reads_file(
    path: Path,
    target: Path,
    columns: Mapping[str, Sequence[str]] | None = None,
    rules: Sequence[Path] = (),
) -> tuple[ReadsFile, int]:
    """The reads stage alone: read and parse ``path`` as a scan would, write ``parsed.csv`` to
    ``target``.

    Parameters
    ----------
    path
        The reads export.
    target
        Where ``parsed.csv`` goes.
    columns
        Role -> column names the user gave.
    rules
        Report-rule files extending the shipped rules.

    Returns
    -------
    tuple
        The reads file as read (its ``info`` says how), and the number of rows written.

    Raises
    ------
    InputFileError
        When the reads file, a rules file or a mapping cannot be used at all.
    """
    parser = ReportParser(load_rules(rules))
    reads = read_reads(path, columns, parser)
    return reads, write_parsed(reads.rows, target)
