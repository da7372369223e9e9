"""Account for every file of an archive: one :class:`FileRecord` per entry, streamed.

Public API (what ``tlaudit inventory`` and ``tlaudit scan`` call)::

    from auditor.archive.inventory import inventory, summarise, write_accounting_csv
    from auditor.archive.triage import TriageRules

    records = inventory(root, TriageRules())        # lazy Iterator[FileRecord], sorted by path
    summary = write_accounting_csv(records, out)    # writes the CSV, returns InventorySummary
    summary = take_inventory(root, rules, out)      # the two above in one call (tlaudit inventory)
    # or: summary = summarise(records)              # count without writing
    candidates = [r for r in inventory(root, rules) if r.status is FileStatus.CANDIDATE]
    # r.meta is the RadiographMeta of every file whose header was read (always for candidates)

Each file's header is read once (DICOM with ``stop_before_pixels``); pixels are decoded only for
candidates and only when ``verify_pixels=True``, with one exception: a PNG, JPEG or TIFF whose
header says colour (RGB or a palette, as most web and PACS exports of a grey radiograph are) is
decoded at reduced size to see whether its channels agree, and then triaged as grey or skipped
as colour, the row saying which (:func:`auditor.io.raster.grey_channel_spread`). Bad files
become rows with a reason; nothing here raises for a single file. ``summary.total`` always equals
the number of rows, and the status and reason counts each add up to it.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from auditor.archive.triage import Reason, TriageDecision, TriageRules, triage_header
from auditor.archive.walk import WalkEntry, WalkIssue, walk_archive
from auditor.errors import ReadError, TlauditError, UnsupportedImageError
from auditor.files import atomic_path, csv_safe
from auditor.io.radiograph import read_header, read_radiograph, sniff_format
from auditor.io.raster import GREY_CHANNEL_TOLERANCE, colour_stored, grey_channel_spread
from auditor.records import RadiographMeta
from auditor.vocab import FileStatus

logger = logging.getLogger(__name__)

_WALK_REASONS: Mapping[WalkIssue, tuple[FileStatus, Reason]] = MappingProxyType(
    {
        WalkIssue.LINK_OUTSIDE_ROOT: (FileStatus.SKIPPED, Reason.SYMLINK_OUTSIDE),
        WalkIssue.LINK_LOOP: (FileStatus.SKIPPED, Reason.SYMLINK_LOOP),
        WalkIssue.LINK_INSIDE_ROOT: (FileStatus.SKIPPED, Reason.SYMLINK_ALIAS),
        WalkIssue.BROKEN_LINK: (FileStatus.SKIPPED, Reason.BROKEN_SYMLINK),
        WalkIssue.SPECIAL_FILE: (FileStatus.SKIPPED, Reason.SPECIAL_FILE),
        WalkIssue.UNLISTABLE_DIRECTORY: (FileStatus.UNREADABLE, Reason.CANNOT_OPEN),
        WalkIssue.UNSTATABLE: (FileStatus.UNREADABLE, Reason.CANNOT_OPEN),
    }
)


@dataclass(frozen=True)
class FileRecord:
    """The accounting row of one archive entry.

    Attributes
    ----------
    path
        Path as found under the root.
    relpath
        Archive-relative POSIX path (the key box files and reports use).
    size
        Bytes.
    status
        candidate / skipped / unreadable.
    reason
        Countable reason (:class:`~auditor.archive.triage.Reason`).
    detail
        What decided, in words, naming the header values or the error.
    meta
        The header when it was read (always for candidates), else None.
    """

    path: Path
    relpath: str
    size: int
    status: FileStatus
    reason: Reason
    detail: str
    meta: RadiographMeta | None = None


def _from_decision(entry: WalkEntry, meta: RadiographMeta, decision: TriageDecision) -> FileRecord:
    return FileRecord(
        entry.path,
        entry.relpath,
        entry.size,
        decision.status,
        decision.reason,
        decision.detail,
        meta,
    )


def classify(entry: WalkEntry, rules: TriageRules, *, verify_pixels: bool = False) -> FileRecord:
    """Turn one walked entry into its accounting row (never raises for a bad file).

    A bad file gives a row with a reason. An error nobody anticipated (a bug, or a parser
    failing in a new way) is logged with its traceback and also becomes an unreadable row, so
    that one file can never stop a batch.

    Parameters
    ----------
    entry
        From :func:`auditor.archive.walk.walk_archive`.
    rules
        Triage rules.
    verify_pixels
        Decode a candidate's pixels to prove it readable (a failure makes it unreadable).
    """
    try:
        return _classify(entry, rules, verify_pixels)
    except Exception as err:  # last resort: see the docstring
        logger.warning("%s: unexpected error during triage", entry.relpath, exc_info=True)
        return FileRecord(
            entry.path,
            entry.relpath,
            entry.size,
            FileStatus.UNREADABLE,
            Reason.UNEXPECTED_ERROR,
            f"{type(err).__name__}: {err}",
        )


def _classify(entry: WalkEntry, rules: TriageRules, verify_pixels: bool) -> FileRecord:
    if entry.issue is not None:
        status, reason = _WALK_REASONS[entry.issue]
        return FileRecord(entry.path, entry.relpath, entry.size, status, reason, entry.detail)
    if rules.files is not None and entry.relpath not in rules.files:
        # Decided by the list alone: no need to open the file.
        return FileRecord(
            entry.path,
            entry.relpath,
            entry.size,
            FileStatus.SKIPPED,
            Reason.NOT_LISTED,
            "not listed",
        )

    def row(status: FileStatus, reason: Reason, detail: str) -> FileRecord:
        return FileRecord(entry.path, entry.relpath, entry.size, status, reason, detail)

    try:
        if sniff_format(entry.path) is None:
            return row(FileStatus.SKIPPED, Reason.NOT_AN_IMAGE, "not DICOM, PNG, JPEG or TIFF")
        meta = read_header(entry.path)
    except UnsupportedImageError as err:
        return row(FileStatus.SKIPPED, Reason.NOT_AN_IMAGE, err.reason)
    except ReadError as err:
        reason = (
            Reason.CANNOT_OPEN if err.reason.startswith("cannot open") else Reason.UNREADABLE_HEADER
        )
        return row(FileStatus.UNREADABLE, reason, err.reason)
    grey = _grey_check(meta)
    if isinstance(grey, TriageDecision):
        return _from_decision(entry, meta, grey)
    decision = triage_header(meta if grey is None else grey[0], entry.relpath, rules)
    if grey is not None:
        decision = replace(decision, detail=f"{decision.detail}; {grey[1]}")
    if verify_pixels and decision.status is FileStatus.CANDIDATE:
        try:
            read_radiograph(entry.path)
        except UnsupportedImageError as err:
            decision = TriageDecision(FileStatus.SKIPPED, Reason.NOT_AN_IMAGE, err.reason)
        except ReadError as err:
            decision = TriageDecision(FileStatus.UNREADABLE, Reason.UNDECODABLE, err.reason)
    return _from_decision(entry, meta, decision)


def _grey_check(meta: RadiographMeta) -> tuple[RadiographMeta, str] | TriageDecision | None:
    """For an export whose header says colour: its header as grey and what was found, or the
    decision that it is colour (or cannot be decoded); None for every other file."""
    if not colour_stored(meta):
        return None
    stored = f"{meta.file_format.upper()} stored as {meta.photometric}"
    try:
        spread = grey_channel_spread(meta)
    except UnsupportedImageError as err:
        return TriageDecision(FileStatus.SKIPPED, Reason.COLOUR, f"{stored}: {err.reason}")
    except ReadError as err:
        return TriageDecision(FileStatus.UNREADABLE, Reason.UNDECODABLE, err.reason)
    found = f"channels differ by {spread:.1f} grey levels on average"
    if spread > GREY_CHANNEL_TOLERANCE:
        return TriageDecision(
            FileStatus.SKIPPED,
            Reason.COLOUR,
            f"{stored}, {found} (grey up to {GREY_CHANNEL_TOLERANCE:g})",
        )
    as_grey = replace(meta, samples_per_pixel=1, photometric="MONOCHROME2")
    return as_grey, f"grey {stored} ({found})"


def inventory(
    root: Path | str,
    rules: TriageRules | None = None,
    *,
    verify_pixels: bool = False,
    skip: Iterable[Path] = (),
) -> Iterator[FileRecord]:
    """Walk ``root`` and yield one accounting row per entry, lazily, in sorted path order.

    Parameters
    ----------
    root
        Archive folder.
    rules
        Triage rules (default :class:`TriageRules()`: lateral TL-spine CR/DX/RG views).
    verify_pixels
        Also decode each candidate's pixels (slower; skipped files are never decoded).
    skip
        tlaudit's own output inside the archive (a run folder, the accounting file), left out
        (see :func:`~auditor.archive.walk.walk_archive`).

    Yields
    ------
    FileRecord

    Raises
    ------
    NotADirectoryError
        When ``root`` is not a directory (raised on the first ``next()``).
    """
    rules = rules or TriageRules()
    for entry in walk_archive(root, skip):
        record = classify(entry, rules, verify_pixels=verify_pixels)
        logger.debug("%s: %s (%s)", record.relpath, record.status, record.reason)
        yield record


@dataclass(frozen=True)
class InventorySummary:
    """Counts over an inventory: ``total`` rows, by status and by (status, reason)."""

    total: int
    by_status: Mapping[FileStatus, int]
    by_reason: Mapping[tuple[FileStatus, Reason], int]
    bytes_total: int = 0
    unmatched_listed: tuple[str, ...] = field(default=())

    @property
    def readable(self) -> int:
        """Rows that were read (everything but unreadable)."""
        return self.total - self.by_status.get(FileStatus.UNREADABLE, 0)


class NoCandidatesError(TlauditError):
    """Triage kept no file of an archive: there is nothing to audit. ``summary`` holds the
    counts by status and reason, which the message repeats in short."""

    def __init__(self, archive: Path | str, summary: InventorySummary) -> None:
        self.archive = Path(archive)
        self.summary = summary
        if summary.total == 0:
            message = f"{self.archive} holds no files"
        else:
            counts = ", ".join(
                f"{count} {reason}" for (_, reason), count in summary.by_reason.items()
            )
            message = (
                f"no lateral thoracolumbar radiograph to audit in {self.archive}: "
                f"{summary.total} files, {counts}"
            )
        super().__init__(message)


class _Tally:
    def __init__(self) -> None:
        self.status: Counter[FileStatus] = Counter()
        self.reason: Counter[tuple[FileStatus, Reason]] = Counter()
        self.bytes = 0
        self.seen: set[str] = set()

    def add(self, record: FileRecord, keep_path: bool) -> None:
        self.status[record.status] += 1
        self.reason[(record.status, record.reason)] += 1
        self.bytes += record.size
        if keep_path:
            self.seen.add(record.relpath)

    def result(self, rules: TriageRules | None) -> InventorySummary:
        listed = rules.files if rules is not None and rules.files is not None else frozenset()
        return InventorySummary(
            total=sum(self.status.values()),
            by_status=MappingProxyType({s: self.status.get(s, 0) for s in FileStatus}),
            by_reason=MappingProxyType(dict(sorted(self.reason.items(), key=lambda kv: -kv[1]))),
            bytes_total=self.bytes,
            unmatched_listed=tuple(sorted(listed - self.seen)),
        )


def summarise(records: Iterable[FileRecord], rules: TriageRules | None = None) -> InventorySummary:
    """Count records by status and reason (consumes ``records``).

    Parameters
    ----------
    records
        Accounting rows.
    rules
        When given with a files list, listed paths that matched no row are reported in
        ``unmatched_listed``.
    """
    tally = _Tally()
    keep = rules is not None and rules.files is not None
    for record in records:
        tally.add(record, keep)
    return tally.result(rules)


CSV_COLUMNS = (
    "path", "size_bytes", "status", "reason", "detail", "file_format", "modality", "body_part",
    "view_position", "image_laterality", "series_description", "study_description",
    "protocol_name", "rows", "columns", "photometric", "bits_stored", "frames",
    "transfer_syntax", "accession_number", "study_uid", "sop_instance_uid",
)  # fmt: skip
"""Columns of the accounting CSV, in order."""


def _csv_row(record: FileRecord) -> list[object]:
    meta = record.meta
    header: list[object] = ["" for _ in CSV_COLUMNS[5:]]
    if meta is not None:
        header = [
            meta.file_format, meta.modality, meta.body_part, meta.view_position, meta.laterality,
            meta.series_description, meta.study_description, meta.protocol_name, meta.rows,
            meta.columns, meta.photometric, meta.bits_stored, meta.frames, meta.transfer_syntax,
            meta.accession_number, meta.study_uid, meta.sop_uid,
        ]  # fmt: skip
    values = [record.relpath, record.size, record.status, record.reason, record.detail, *header]
    return [csv_safe(v) for v in values]


def write_accounting_csv(
    records: Iterable[FileRecord], path: Path | str, rules: TriageRules | None = None
) -> InventorySummary:
    """Write one CSV row per record (streaming) and return the counts.

    The file is UTF-8 with a header row (:data:`CSV_COLUMNS`); header text that a spreadsheet
    would read as a formula is prefixed with an apostrophe. It is written to a temporary file
    and moved into place, so a crash never leaves a partial table.

    Parameters
    ----------
    records
        Accounting rows, e.g. ``inventory(root, rules)``.
    path
        Output CSV path (parent folders are created).
    rules
        Passed to the summary (see :func:`summarise`).

    Returns
    -------
    InventorySummary
        Counts over exactly the rows written.
    """
    tally = _Tally()
    keep = rules is not None and rules.files is not None
    with atomic_path(Path(path)) as tmp, tmp.open("w", encoding="utf-8", newline="") as fp:
        writer = csv.writer(fp)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            writer.writerow(_csv_row(record))
            tally.add(record, keep)
    return tally.result(rules)


def take_inventory(
    root: Path | str,
    rules: TriageRules,
    out_csv: Path | str,
    *,
    verify_pixels: bool = False,
    on_record: Callable[[FileRecord], None] | None = None,
) -> InventorySummary:
    """Walk ``root``, triage every file and write the accounting CSV (``tlaudit inventory``).

    Parameters
    ----------
    root
        Archive folder.
    rules
        Triage rules.
    out_csv
        Accounting CSV to write (see :func:`write_accounting_csv`).
    verify_pixels
        Decode candidates' pixels to prove them readable.
    on_record
        Called with each row as it is produced (progress display).

    Returns
    -------
    InventorySummary
    """

    def rows() -> Iterator[FileRecord]:
        # the accounting file is no part of the archive, even when written inside it
        for record in inventory(root, rules, verify_pixels=verify_pixels, skip=(Path(out_csv),)):
            if on_record is not None:
                on_record(record)
            yield record

    return write_accounting_csv(rows(), out_csv, rules)
