"""``tlaudit parse-reads``: one row per study and level, formulas neutralised, a summary that
says how the file was read."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.files import csv_unsafe
from auditor.reads.parsed import PARSED_COLUMNS


def test_parse_reads_writes_levels_and_prints_how_it_read(tmp_path: Path) -> None:
    reads = tmp_path / "export.csv"
    reads.write_bytes(
        (
            "AccNr\tBefundtext\tFraktur\n"
            "A1\tFrische Deckplattenimpression LWK 1. BWK 12 intakt.\tja\n"
            "A2\tTassement ancien de D12. Pas de fracture récente.\tnon\n"
            '=cmd|"/c calc"!A1\t=1+1 Fracture of L2?\tyes\n'
            "A4\tNormal study.\tvielleicht\n"
        ).encode("cp1252")
    )
    out = tmp_path / "parsed.csv"
    result = CliRunner().invoke(
        app, ["parse-reads", str(reads), "--out", str(out), "--reads-column", "acc=AccNr"]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for line in (
        "encoding: cp1252",
        "delimiter: tab",
        "column accession_number <- AccNr (user)",
        "column text <- Befundtext (recognised)",
        "column fracture_reported <- Fraktur (recognised)",
        "mentions: 1 affirmed, 1 old, 1 uncertain, 2 negated",
        "3 reads, 1 rows rejected; 5 level mentions written",
        "rejected row 4 (A4): fracture_reported must be yes or no",
    ):
        assert line in output
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == PARSED_COLUMNS
    got = [(csv_unsafe(r["key"]), r["level"], r["mention"]) for r in rows]
    assert got == [
        ("A1", "T12", "negated"),
        ("A1", "L1", "affirmed"),
        ("A2", "*", "negated"),
        ("A2", "T12", "old"),
        ('=cmd|"/c calc"!A1', "L2", "uncertain"),
    ]
    assert all(not r["key"].startswith("=") and not r["sentence"].startswith("=") for r in rows)
