"""``tlaudit inventory`` in-process: exit codes, summary table, accounting CSV, triage options."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli import app as app_module
from tests.helpers.dicom_files import make_dicom

runner = CliRunner()


def _archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    make_dicom(root / "p1" / "lat.dcm", body_part="LSPINE", view="LL")
    make_dicom(root / "p1" / "ap.dcm", body_part="LSPINE", view="AP")
    make_dicom(root / "p2" / "nolabel.dcm", body_part="LSPINE", view=None)
    make_dicom(root / "p2" / "chest.dcm", modality="CR", body_part="CHEST", view="PA")
    make_dicom(root / "p3" / "ct.dcm", modality="CT", body_part="LSPINE", view="LL")
    (root / "p3" / "notes.txt").write_text("hello")
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fp:
        return {row["path"]: row for row in csv.DictReader(fp)}


def _run(*args: str):
    return runner.invoke(app_module.app, ["inventory", *args])


def test_inventory_writes_the_accounting_table_and_summary(tmp_path: Path):
    out = tmp_path / "out" / "accounting.csv"
    result = _run(str(_archive(tmp_path)), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 6
    assert rows["p1/lat.dcm"]["status"] == "candidate"
    assert rows["p1/ap.dcm"]["reason"] == "frontal view"
    assert rows["p3/ct.dcm"]["reason"] == "not a radiograph modality"
    assert "Inventory of" in result.output and "frontal view" in result.output
    assert "6 files" in result.output


@pytest.mark.parametrize(
    ("options", "candidates"),
    [
        ([], {"p1/lat.dcm"}),
        (["--accept-blank-view"], {"p1/lat.dcm", "p2/nolabel.dcm"}),
        (["--include-all-radiographs"], {"p1/lat.dcm", "p1/ap.dcm", "p2/nolabel.dcm",
                                         "p2/chest.dcm"}),
        (["--modality", "CT"], {"p3/ct.dcm"}),
        (["--modality", "cr", "--include-all-radiographs"], {"p2/chest.dcm"}),
    ],
)  # fmt: skip
def test_triage_options_widen_and_narrow(tmp_path: Path, options: list[str], candidates: set[str]):
    out = tmp_path / "acc.csv"
    result = _run(str(_archive(tmp_path)), "--out", str(out), *options)
    assert result.exit_code == 0, result.output
    found = {p for p, row in _rows(out).items() if row["status"] == "candidate"}
    assert found == candidates


def test_files_list_and_extra_keywords(tmp_path: Path):
    root = _archive(tmp_path)
    make_dicom(root / "p4" / "odd.dcm", body_part="KREUZ", view=None, series_description="quer")
    listfile = tmp_path / "list.txt"
    listfile.write_text("p2/chest.dcm\nmissing/x.dcm\n")
    out = tmp_path / "acc.csv"
    result = _run(str(root), "--out", str(out), "--files", str(listfile))
    assert result.exit_code == 0, result.output
    assert {p for p, r in _rows(out).items() if r["status"] == "candidate"} == {"p2/chest.dcm"}
    assert "missing/x.dcm" in result.output
    result = _run(
        str(root), "--out", str(out), "--body-part-keyword", "kreuz", "--lateral-keyword", "quer"
    )
    assert result.exit_code == 0, result.output
    assert _rows(out)["p4/odd.dcm"]["status"] == "candidate"


def test_help_lists_the_triage_options():
    result = runner.invoke(app_module.app, ["inventory", "--help"])
    assert result.exit_code == 0
    for option in ("--include-all-radiographs", "--accept-blank-view", "--modality", "--files"):
        assert option in result.output


def _words(text: str) -> str:
    """Rich wraps long lines at the console width; compare text with whitespace collapsed."""
    return " ".join(text.split())


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tlaudit", *args])
    with pytest.raises(SystemExit) as info:
        app_module.main()
    code = info.value.code
    return 0 if code is None else int(code)


def test_exit_codes_through_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    root = _archive(tmp_path)
    out = str(tmp_path / "acc.csv")
    assert _main(monkeypatch, "inventory", str(root), "--out", out) == 0
    # usage errors: a missing archive, a malformed modality
    assert _main(monkeypatch, "inventory", str(tmp_path / "nowhere"), "--out", out) == 2
    assert _main(monkeypatch, "inventory", str(root), "--out", out, "--modality", "C/T") == 2
    assert "not a DICOM modality code" in _words(capsys.readouterr().err)
    # nothing could be read: an empty archive, an archive of unreadable files only
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _main(monkeypatch, "inventory", str(empty), "--out", out) == 1
    assert "holds no files" in _words(capsys.readouterr().err)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.dcm").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    assert _main(monkeypatch, "inventory", str(broken), "--out", out) == 1
    assert "nothing under" in _words(capsys.readouterr().err)
    assert _rows(Path(out))["a.dcm"]["status"] == "unreadable"  # the table is still written


def test_version_and_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    assert _main(monkeypatch, "--version") == 0
    assert "tlaudit" in capsys.readouterr().out
    assert _main(monkeypatch, "--help") == 0
    assert "inventory" in capsys.readouterr().out


def test_the_summary_names_the_option_that_takes_each_skipped_reason(tmp_path: Path):
    out = tmp_path / "acc.csv"
    result = _run(str(_archive(tmp_path)), "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[2].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "--accept-blank-view" in lines["view not recorded"]
    assert "--modality CODE" in lines["not a radiograph modality"]
    assert "--include-all-radiographs" in lines["frontal view"]
    assert "│" in lines["not an image"] and "--" not in lines["not an image"]


def test_an_accounting_file_inside_the_archive_is_not_walked(tmp_path: Path):
    root = _archive(tmp_path)
    out = root / "accounting.csv"
    first = _run(str(root), "--out", str(out))
    assert first.exit_code == 0, first.output
    second = _run(str(root), "--out", str(out))
    assert second.exit_code == 0, second.output
    rows = _rows(out)
    assert len(rows) == 6 and "accounting.csv" not in rows
