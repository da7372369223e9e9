"""The scan's report writers are one list: each writes its file; a new one is one entry."""

from __future__ import annotations

import csv
from pathlib import Path

import openpyxl

from auditor.records import AuditReport
from auditor.reports.writers import SCAN_REPORTS, ReportOptions, ReportWriter, write_reports
from tests.reports.test_html import EVIL, _report


def test_every_scan_report_is_written_under_its_name(tmp_path: Path) -> None:
    report = _report(tmp_path, 3)
    paths = write_reports(report, ReportOptions(tmp_path))
    assert list(paths) == [w.kind for w in SCAN_REPORTS] == ["xlsx", "html", "csv", "cases"]
    assert {p.name for p in paths.values()} == {
        "audit.xlsx",
        "audit.html",
        "findings.csv",
        "cases.json",
    }
    openpyxl.load_workbook(paths["xlsx"])  # a workbook a spreadsheet program opens
    assert EVIL not in paths["html"].read_text(encoding="utf-8")
    with paths["csv"].open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(report.vertebrae)


def test_a_new_writer_is_one_entry(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def count(report: AuditReport, target: Path, options: ReportOptions) -> None:
        target.write_text(str(len(report.studies)), encoding="utf-8")
        seen.append((target.name, len(report.vertebrae)))

    extra = ReportWriter("count", "studies.txt", count)
    paths = write_reports(_report(tmp_path, 2), ReportOptions(tmp_path), (*SCAN_REPORTS, extra))
    assert paths["count"].read_text(encoding="utf-8") == "2" and seen == [("studies.txt", 6)]
    assert set(paths) == {"xlsx", "html", "csv", "cases", "count"}
