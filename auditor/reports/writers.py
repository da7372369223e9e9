"""The reports a scan writes, as one list the scan iterates.

Adding a report (a DICOM SR writer, say) is one module with a ``write(report, target, options)``
function and one :class:`ReportWriter` line in :data:`SCAN_REPORTS`; the scan itself does not
change. Each writer writes its file atomically and formats only: every decision is already in the
:class:`~auditor.records.AuditReport` it is given.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from auditor.records import AuditReport
from auditor.reports.cases import CASES_NAME, write_cases
from auditor.reports.limits import DEFAULT_EMBED_LIMIT, DEFAULT_TABLE_LIMIT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """What the writers need beyond the report: the run folder (thumbnails are relative to it),
    the HTML page's size limits, and what the model's card says it was trained on (the page
    carries a banner for a model trained on synthetic data only)."""

    run_dir: Path
    embed_limit: int = DEFAULT_EMBED_LIMIT
    table_limit: int = DEFAULT_TABLE_LIMIT
    training_data: str = ""
    validation: str = ""
    """The model card's validation status in words, shown in the HTML report's header."""


@dataclass(frozen=True)
class ReportWriter:
    """One report: its key in :attr:`~auditor.scan.config.ScanResult.reports`, its file name in
    the run folder, and the function that writes it."""

    kind: str
    filename: str
    #: writes ``target``; returns any other file it left beside it, by kind (or None)
    write: Callable[[AuditReport, Path, ReportOptions], Mapping[str, Path] | None]


def _excel(report: AuditReport, target: Path, options: ReportOptions) -> dict[str, Path]:
    """Write the workbook. A workbook already there that holds reviewer verdicts, comments or
    vertebra decisions (a ``--resume``, or a rescan into the run folder) is never overwritten: it
    is kept as ``audit.reviewed-N.xlsx`` and its verdicts and decisions are carried into the new
    one, study by study and box by box."""
    from auditor.reports.excel import read_decisions, read_verdicts, write_excel  # openpyxl

    verdicts: dict[str, tuple[str, str]] = {}
    decisions: dict[tuple[str, str, str], str] = {}
    kept: dict[str, Path] = {}
    if target.is_file():
        unreadable = False
        try:
            verdicts = read_verdicts(target)
            decisions = {row.key: row.decision for row in read_decisions(target)}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            # not a workbook we can read: keep it all the same, a person may have typed in it
            logger.warning("%s cannot be read as a workbook (%s); it is kept", target.name, err)
            unreadable = True
        if verdicts or decisions or unreadable:
            keep = _reviewed_name(target)
            os.replace(target, keep)
            kept["xlsx (the reviewed workbook, kept)"] = keep
    write_excel(report, options.run_dir, target, verdicts, decisions)
    if decisions:
        logger.warning(
            "%s held %d vertebra decisions: it is kept as %s, and the new %s carries them over "
            "for the boxes still in the run",
            target.name,
            len(decisions),
            next(iter(kept.values())).name,
            target.name,
        )
    if verdicts:
        queue = {study.key for study in report.studies}
        carried = sum(key in queue for key in verdicts)
        logger.warning(
            "%s held reviewer verdicts or comments for %d studies: it is kept as %s, and the "
            "new %s carries them over for the %d of them still in the flagged queue",
            target.name,
            len(verdicts),
            next(iter(kept.values())).name,
            target.name,
            carried,
        )
    return kept


def _reviewed_name(target: Path) -> Path:
    """The first free ``<stem>.reviewed-N<suffix>`` beside ``target``, N counting from 1."""
    n = 1
    while (path := target.with_name(f"{target.stem}.reviewed-{n}{target.suffix}")).exists():
        n += 1
    return path


def _html(report: AuditReport, target: Path, options: ReportOptions) -> None:
    from auditor.reports.html import model_banner, write_html  # jinja2: only when one is written

    write_html(
        report,
        options.run_dir,
        target,
        options.embed_limit,
        options.table_limit,
        banner=model_banner(options.training_data),
        validation=options.validation,
    )


def _csv(report: AuditReport, target: Path, options: ReportOptions) -> None:
    from auditor.reports.findings import write_findings_csv

    write_findings_csv(report, target)


def _cases(report: AuditReport, target: Path, options: ReportOptions) -> None:
    write_cases(report, target, options.training_data)


#: Every report ``tlaudit scan`` writes, in the order it writes and lists them.
SCAN_REPORTS: tuple[ReportWriter, ...] = (
    ReportWriter("xlsx", "audit.xlsx", _excel),
    ReportWriter("html", "audit.html", _html),
    ReportWriter("csv", "findings.csv", _csv),
    ReportWriter("cases", CASES_NAME, _cases),
)


def write_reports(
    report: AuditReport, options: ReportOptions, writers: tuple[ReportWriter, ...] = SCAN_REPORTS
) -> dict[str, Path]:
    """Write each report of ``writers`` into ``options.run_dir``; return ``{kind: path}``."""
    paths: dict[str, Path] = {}
    for writer in writers:
        target = options.run_dir / writer.filename
        others = writer.write(report, target, options)
        paths[writer.kind] = target
        paths.update(others or {})
    return paths
