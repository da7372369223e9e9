"""``tlaudit inventory``: account for every file of an archive and triage it (thin command)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from auditor.cli.triage_options import (
    AcceptBlankBodyPart,
    AcceptBlankView,
    BodyPartKeywords,
    FilesList,
    IncludeAllRadiographs,
    LateralKeywords,
    Modalities,
    build_rules,
    triage_table,
)
from auditor.errors import TlauditError

if TYPE_CHECKING:
    from auditor.archive.inventory import FileRecord, InventorySummary


def inventory_command(
    archive: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            dir_okay=True,
            metavar="ARCHIVE",
            help="Archive folder to walk.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", dir_okay=False, help="Accounting CSV to write."),
    ] = Path("accounting.csv"),
    verify_pixels: Annotated[
        bool,
        typer.Option(
            "--verify-pixels",
            help="Also decode each candidate's pixels (skipped files are never decoded).",
        ),
    ] = False,
    include_all_radiographs: IncludeAllRadiographs = False,
    accept_blank_view: AcceptBlankView = False,
    accept_blank_body_part: AcceptBlankBodyPart = False,
    modality: Modalities = None,
    body_part_keyword: BodyPartKeywords = None,
    lateral_keyword: LateralKeywords = None,
    files: FilesList = None,
) -> None:
    """Walk ARCHIVE, triage every file from its header, and write one CSV row per file."""
    from auditor.archive.inventory import take_inventory  # pydicom loads here, not at import

    rules = build_rules(
        include_all_radiographs=include_all_radiographs,
        accept_blank_view=accept_blank_view,
        accept_blank_body_part=accept_blank_body_part,
        modality=modality,
        body_part_keyword=body_part_keyword,
        lateral_keyword=lateral_keyword,
        files=files,
    )
    console = Console()
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} files"),
        TextColumn("[dim]{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("", total=None)

        def on_record(record: FileRecord) -> None:
            progress.update(task, advance=1, description=escape(record.relpath[-60:]))

        summary = take_inventory(
            archive, rules, out, verify_pixels=verify_pixels, on_record=on_record
        )
    elapsed = time.perf_counter() - started
    _print_summary(console, archive, out, summary, elapsed)
    if summary.total == 0:
        raise TlauditError(f"{archive} holds no files")
    if summary.readable == 0:
        raise TlauditError(f"nothing under {archive} could be read ({summary.total} entries)")


def _print_summary(
    console: Console, archive: Path, out: Path, summary: InventorySummary, elapsed: float
) -> None:
    console.print(triage_table(f"Inventory of {archive}", summary))
    megabytes = summary.bytes_total / 1e6
    console.print(
        f"{summary.total} files ({megabytes:.1f} MB) in {elapsed:.2f} s; "
        f"accounting table: {escape(str(out))}",
        highlight=False,
    )
    if summary.unmatched_listed:
        shown = ", ".join(summary.unmatched_listed[:5])
        more = len(summary.unmatched_listed) - 5
        console.print(
            f"[yellow]{len(summary.unmatched_listed)} listed path(s) not found in the archive:[/] "
            f"{escape(shown)}{f' and {more} more' if more > 0 else ''}",
            highlight=False,
        )
