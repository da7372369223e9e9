"""The reads warning: more than 10 % of the rows rejected, or no read matching a scanned study,
shown in red in the terminal and at the top of every report; --strict-reads makes it exit 1."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import openpyxl
import pytest

from auditor.errors import InputFileError
from auditor.reads.quality import check_reads, common_reasons, reason_kind
from auditor.records import ReadsCheck, RowError
from auditor.reports.excel import write_excel
from auditor.reports.html import write_html
from tests.reports.test_html import _report


def _errors(*reasons: str) -> tuple[RowError, ...]:
    return tuple(RowError(k + 1, reason, source="reads file") for k, reason in enumerate(reasons))


def test_reasons_are_counted_by_kind_without_their_values() -> None:
    errors = _errors(
        "fracture_reported must be yes or no, got 'maybe'",
        "fracture_reported must be yes or no, got 'ja?'",
        "report text is 12,000,001 characters long",
        "report text is 300,000 characters long",
        "no accession_number, study_uid or image to match the study by",
        "fracture_reported must be yes or no, got 'x'",
        "something else",
    )
    assert reason_kind("got 'maybe' in row 12") == "got … in row N"
    assert common_reasons(errors) == (
        ("fracture_reported must be yes or no, got …", 3),
        ("report text is N characters long", 2),
        ("no accession_number, study_uid or image to match the study by", 1),
    )


@pytest.mark.parametrize(
    ("reads", "rejected", "matched", "studies", "due", "says"),
    [
        (90, 10, 5, 6, False, ""),  # exactly 10 %: no warning
        (89, 11, 5, 6, True, "11 of 100 rows of the reads file were rejected (11%"),
        (20, 0, 0, 6, True, "no read matches any of the 6 scanned studies"),
        (20, 0, 0, 0, False, ""),  # nothing scanned, nothing to match
        (0, 3, 0, 4, True, "3 of 3 rows"),
    ],
)
def test_when_the_warning_is_due(
    reads: int, rejected: int, matched: int, studies: int, due: bool, says: str
) -> None:
    check = check_reads(reads, _errors(*["bad yes/no"] * rejected), matched, studies)
    assert check.warning_due is due
    banner = check.banner()
    assert (banner != "") is due
    assert says in banner
    if due and rejected:
        assert f"bad yes/no ({rejected} rows)" in banner


class _Banners(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.banners: list[tuple[str, str]] = []
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self._id = attributes.get("id") if attributes.get("class") == "banner" else None

    def handle_data(self, data: str) -> None:
        if self._id:
            self.banners.append((self._id, data))
            self._id = None


def _due() -> ReadsCheck:
    reasons = (("fracture_reported must be yes or no, got …", 23),)
    return ReadsCheck(rows=24, rejected=23, matched=1, studies=24, reasons=reasons)


def test_html_and_excel_show_the_warning_at_the_top(tmp_path: Path) -> None:
    report = dataclasses.replace(_report(tmp_path, 1), reads_check=_due())
    write_html(report, tmp_path, tmp_path / "audit.html")
    page = _Banners()
    page.feed((tmp_path / "audit.html").read_text(encoding="utf-8"))
    assert page.banners == [("reads-banner", _due().banner())]
    write_excel(report, tmp_path, tmp_path / "audit.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "audit.xlsx").worksheets[0]
    assert sheet.title == "Summary"
    assert (sheet["A2"].value, sheet["B2"].value) == ("WARNING", _due().banner())
    assert sheet["B2"].font.color.rgb.endswith("B71C1C")


def test_no_warning_when_none_is_due(tmp_path: Path) -> None:
    fine = ReadsCheck(rows=24, rejected=0, matched=24, studies=24)
    report = dataclasses.replace(_report(tmp_path, 1), reads_check=fine)
    write_html(report, tmp_path, tmp_path / "audit.html")
    assert 'id="reads-banner"' not in (tmp_path / "audit.html").read_text(encoding="utf-8")
    write_excel(report, tmp_path, tmp_path / "audit.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "audit.xlsx").worksheets[0]
    assert sheet["A2"].value != "WARNING"


@pytest.mark.slow
def test_scan_warns_in_red_and_strict_reads_exits_1(bundle: Path, tmp_path: Path) -> None:
    """A reads file in ja/nein with German column names matches every study (no warning); one
    whose keys match nothing warns, and exits 1 with --strict-reads."""
    from typer.testing import CliRunner

    from auditor.cli.app import app
    from tests.helpers.scan_world import make_scan_world

    world = make_scan_world(tmp_path / "world", n_studies=2)
    german = tmp_path / "befunde.csv"
    german.write_text(
        "Studien-UID;Fraktur;Befundtext\n"
        + "".join(f"{uid};nein;Keine Fraktur.\n" for uid in world.study_uids),
        encoding="cp1252",
    )
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("accession,report\nNOPE1,No fracture.\nNOPE2,No fracture.\n", "utf-8")
    common = ["--boxes", str(world.boxes), "--model", str(bundle), "--threshold", "0"]
    common += ["--device", "cpu", "--workers", "0", "--strict-reads"]
    archive = str(world.archive)
    runner = CliRunner()
    ok = runner.invoke(
        app,
        ["scan", archive, "--out", str(tmp_path / "ok"), "--reads", str(german), *common],
    )
    assert ok.exit_code == 0, ok.output
    assert "Reads file:" not in ok.output
    assert "column text <- Befundtext (recognised)" in ok.output
    bad = runner.invoke(
        app,
        ["scan", archive, "--out", str(tmp_path / "bad"), "--reads", str(wrong), *common],
    )
    assert bad.exit_code == 1
    assert isinstance(bad.exception, InputFileError)  # main() maps it to exit code 1
    assert "no read matches any of the 2 scanned studies" in " ".join(bad.output.split())
    html = (tmp_path / "bad" / "audit.html").read_text(encoding="utf-8")
    assert 'id="reads-banner"' in html
