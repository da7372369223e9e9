"""The reports a scan writes, as one list the scan iterates.

Adding a report (a DICOM SR writer, say) is one module with a ``write(report, target, options)``
function and one :class:`ReportWriter` line in :data:`SCAN_REPORTS`; the scan itself does not
change. Each writer writes its file atomically and formats only: every decision is already in the
:class:`~auditor.records.AuditReport` it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.records import AuditReport
from auditor.reports.limits import DEFAULT_EMBED_LIMIT, DEFAULT_TABLE_LIMIT


@dataclass(frozen=True)
class ReportOptions:
    """What the writers need beyond the report: the run folder (thumbnails are relative to it),
    the HTML page's size limits, and what the model's card says it was trained on (the page
    carries a banner for a model trained on synthetic data only)."""

    run_dir: Path
    embed_limit: int = DEFAULT_EMBED_LIMIT
    table_limit: int = DEFAULT_TABLE_LIMIT
    training_data: str = ""


@dataclass(frozen=True)
class ReportWriter:
    """One report: its key in :attr:`~auditor.scan.config.ScanResult.reports`, its file name in
    the run folder, and the function that writes it."""

    kind: str
    filename: str
    write: Callable[[AuditReport, Path, ReportOptions], None]


def _excel(report: AuditReport, target: Path, options: ReportOptions) -> None:
    from auditor.reports.excel import write_excel  # openpyxl: only when a workbook is written

    write_excel(report, options.run_dir, target)


def _html(report: AuditReport, target: Path, options: ReportOptions) -> None:
    from auditor.reports.html import model_banner, write_html  # jinja2: only when one is written

    write_html(
        report,
        options.run_dir,
        target,
        options.embed_limit,
        options.table_limit,
        banner=model_banner(options.training_data),
    )


def _csv(report: AuditReport, target: Path, options: ReportOptions) -> None:
    from auditor.reports.findings import write_findings_csv

    write_findings_csv(report, target)


#: Every report ``tlaudit scan`` writes, in the order it writes and lists them.
SCAN_REPORTS: tuple[ReportWriter, ...] = (
    ReportWriter("xlsx", "audit.xlsx", _excel),
    ReportWriter("html", "audit.html", _html),
    ReportWriter("csv", "findings.csv", _csv),
)


def write_reports(
    report: AuditReport, options: ReportOptions, writers: tuple[ReportWriter, ...] = SCAN_REPORTS
) -> dict[str, Path]:
    """Write each report of ``writers`` into ``options.run_dir``; return ``{kind: path}``."""
    paths: dict[str, Path] = {}
    for writer in writers:
        target = options.run_dir / writer.filename
        writer.write(report, target, options)
        paths[writer.kind] = target
    return paths
