"""``tlaudit parse-reads``: the reads stage alone, so a QA team can check how tlaudit reads its
export before a scan (thin command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor.cli.scan import reads_mapping

#: Most rejected rows listed in the terminal (all are counted).
_ERRORS_SHOWN = 10


def parse_reads_command(
    reads: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="The reads export (CSV or .xlsx)."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            dir_okay=False,
            help="parsed.csv to write: key, row, level, mention, sentence.",
        ),
    ],
    reads_column: Annotated[
        list[str] | None,
        typer.Option(help="ROLE=COLUMN, as for tlaudit scan; repeatable."),
    ] = None,
    reads_columns: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="A file of ROLE=COLUMN lines."),
    ] = None,
    reads_rules: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True, dir_okay=False, help="Report rules extending the shipped ones; repeatable."
        ),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Also score the parse against this truth (a synthetic world's reads_truth.csv, "
            "or your own: study_uid or accession_number, level, mention): F1 and every miss.",
        ),
    ] = None,
) -> None:
    """Parse READS as a scan would and write one row per study and level the text mentions."""
    from auditor.reads.parsed import parse_reads_file

    mapping = dict(reads_mapping(reads_column or (), reads_columns))
    parsed, n_rows = parse_reads_file(reads, out, mapping, tuple(reads_rules or ()))
    console = Console()
    for line in parsed.notes:
        console.print(escape(line), highlight=False)
    console.print(
        f"{len(parsed.rows)} reads, {len(parsed.errors)} rows rejected; "
        f"{n_rows} level mentions written to {escape(str(out))}",
        highlight=False,
    )
    for error in parsed.errors[:_ERRORS_SHOWN]:
        console.print(f"  rejected {escape(str(error))}", highlight=False)
    if len(parsed.errors) > _ERRORS_SHOWN:
        console.print(f"  ... and {len(parsed.errors) - _ERRORS_SHOWN} more", highlight=False)
    if truth is not None:
        from auditor.reads.evaluate import score_against_truth

        score = score_against_truth(parsed.rows, truth)
        for line in score.lines():
            console.print(line, highlight=False)
        for miss in score.misses:
            console.print(
                f"  miss {escape(miss.key)} {miss.level}: expected {miss.expected}, "
                f"found {miss.found}",
                highlight=False,
            )
