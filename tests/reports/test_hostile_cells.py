"""Header strings that attack the reader: a formula-like image name keeps Excel's quote prefix in
the queue's hyperlink cell, and bidirectional controls (a right-to-left override that shows
``exe.txt`` as ``txt.exe``) are stripped in the workbook and the HTML, every visible character
kept so the value is still findable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import openpyxl

from auditor.reports.writers import ReportOptions, write_reports
from tests.reports.test_html import _report

RLO = "\u202e"
SHOWN_REVERSED = f"ACC{RLO}exe.txt"  # displays as ACCtxt.exe


def test_hostile_strings_in_the_queue_workbook_and_page(tmp_path: Path) -> None:
    base = _report(tmp_path, 1)
    study = dataclasses.replace(
        base.studies[0],
        accession_number=SHOWN_REVERSED,
        images=('=HYPERLINK("http://evil.example")/a.dcm',),
        image_path="archive/a.dcm",
    )
    report = dataclasses.replace(base, studies=(study,))
    paths = write_reports(report, ReportOptions(tmp_path))
    queue = openpyxl.load_workbook(paths["xlsx"])["Flagged queue"]
    headers = [cell.value for cell in queue[1]]
    link = queue.cell(row=2, column=headers.index("Image") + 1)
    assert link.hyperlink is not None and link.value.startswith("=HYPERLINK")  # shown ...
    assert link.quotePrefix and link.data_type == "s"  # ... and its text is never a formula
    accession = queue.cell(row=2, column=headers.index("Accession") + 1).value
    assert accession == "ACCexe.txt"  # no control left; every visible character kept
    html = paths["html"].read_text(encoding="utf-8")
    assert RLO not in html and "ACCexe.txt" in html
