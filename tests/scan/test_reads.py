"""Reads-file parsing: valid rows, named row errors, whole-file errors, and study matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import InputFileError
from auditor.scan.reads import ReadIndex, read_reads_file
from auditor.vocab import Level

HEADER = "accession_number,study_uid,image,fracture_reported,reported_levels,impression\n"


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "reads.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_valid_rows_are_parsed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "A1,,,yes,t12; L1,Wedge fracture\n,1.2.3,,no,,Normal\n,,a/b.dcm,TRUE,,Fracture somewhere\n",
    )
    reads = read_reads_file(path)
    assert reads.errors == ()
    first, second, third = reads.rows
    assert first.accession_number == "A1"
    assert first.fracture_reported is True
    assert first.reported_levels == (Level.T12, Level.L1)
    assert first.impression == "Wedge fracture"
    assert second.study_uid == "1.2.3" and second.fracture_reported is False
    assert third.image == "a/b.dcm" and third.reported_levels == ()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("A1,,,maybe,,", "fracture_reported must be yes or no"),
        ("A1,,,yes,T99,", "unknown vertebral level 'T99'"),
        (",,,no,,", "no accession_number, study_uid or image"),
        ("A1,,,no,L1,", "fracture_reported is no but reported_levels names L1"),
        (",,../../etc/passwd,no,,", "points outside the archive"),
    ],
)
def test_bad_rows_become_named_errors(tmp_path: Path, row: str, message: str) -> None:
    reads = read_reads_file(_write(tmp_path, "OK1,,,no,,\n" + row + "\n"))
    assert len(reads.rows) == 1
    assert len(reads.errors) == 1
    error = reads.errors[0]
    assert error.row == 2
    assert message in error.reason
    assert str(error).startswith("row 2")


def test_duplicate_key_keeps_first_row(tmp_path: Path) -> None:
    reads = read_reads_file(_write(tmp_path, "A1,,,no,,\nA1,,,yes,L2,\n"))
    assert [r.row for r in reads.rows] == [1]
    assert "already given in row 1" in reads.errors[0].reason


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("accession_number,comment\n", "no report text and no fracture_reported"),
        ("fracture_reported,impression\n", "no column to match a study by"),
    ],
)
def test_missing_columns_raise(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message):
        read_reads_file(_write(tmp_path, "", header=header))


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_reads_file(tmp_path / "nope.csv")


def test_index_matches_uid_then_accession_then_image(tmp_path: Path) -> None:
    reads = read_reads_file(
        _write(tmp_path, "ACC,,,no,,by accession\n,UID,,yes,,by uid\n,,x/y.dcm,no,,by image\n")
    )
    index = ReadIndex(reads.rows)
    assert index.match("UID", "ACC", []).impression == "by uid"  # type: ignore[union-attr]
    assert index.match("other", "ACC", []).impression == "by accession"  # type: ignore[union-attr]
    assert index.match("", "", ["q.dcm", "x/y.dcm"]).impression == "by image"  # type: ignore[union-attr]
    assert index.match("nope", "nope", ["nope"]) is None
