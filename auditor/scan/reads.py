"""The reads file of a scan, and matching each study to its read.

Reading the file is :func:`auditor.reads.file.read_reads`: CSV in any common encoding and
delimiter or ``.xlsx``, export column names recognised or mapped by the user, report text parsed
per level, structured ``fracture_reported`` / ``reported_levels`` columns read where present
(docs/file-formats.md has the columns). Validation never raises for one bad row: each becomes a
:class:`~auditor.records.RowError` naming the row, which the scan counts and lists. Only a file
that cannot be read as a table at all raises :class:`~auditor.errors.InputFileError`.

Matching a study to its read (:class:`ReadIndex`): Study Instance UID first, then Accession
Number, then the path of any image of the study; the first key that matches wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from auditor.reads.file import ReadsFile, read_reads
from auditor.records import ReadRow

__all__ = ["ReadIndex", "ReadsFile", "read_reads_file"]


def read_reads_file(
    path: Path,
    columns: Mapping[str, Sequence[str]] | None = None,
    rules: Sequence[Path] = (),
) -> ReadsFile:
    """Read and validate a reads file for a scan.

    Parameters
    ----------
    path
        CSV or ``.xlsx`` export.
    columns
        Role -> column names the user gave (``--reads-column``, a mapping file), see
        :func:`auditor.reads.columns.parse_mapping`.
    rules
        Report-rule files extending the shipped rules (``--reads-rules``).

    Returns
    -------
    ReadsFile
        Valid rows as :class:`ReadRow`, rejected rows as :class:`~auditor.records.RowError`, and
        how the file was read.

    Raises
    ------
    InputFileError
        When the file cannot be read as a table, has no key column, or has neither report text
        nor a ``fracture_reported`` column.
    """
    from auditor.reads.rules import load_rules
    from auditor.reads.text import ReportParser

    parser = ReportParser(load_rules(rules)) if rules else None
    return read_reads(path, columns, parser)


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
