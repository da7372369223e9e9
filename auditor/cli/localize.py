"""``tlaudit localize`` and ``tlaudit evaluate-localizer``: the vertebra localizer on an archive."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditor.cli.triage_options import (
    AcceptBlankBodyPart,
    AcceptBlankView,
    BodyPartKeywords,
    FilesList,
    IncludeAllRadiographs,
    LateralKeywords,
    Modalities,
    build_rules,
)
from auditor.errors import UsageError

ThreadsOption = Annotated[
    int,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for the network (1 was fastest on a busy 2-core machine).",
    ),
]
BundleOption = Annotated[
    Path | None,
    typer.Option(
        "--localizer",
        exists=True,
        file_okay=False,
        help="Localizer bundle folder (default: the bundled one in models/).",
    ),
]


def localize_command(
    archive: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, metavar="ARCHIVE", help="Archive folder to localize."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", dir_okay=False, help="Box file to write (CSV: its name ends in .csv)."
        ),
    ] = Path("boxes.csv"),
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing box file (perhaps corrected by hand) and its .images.csv.",
        ),
    ] = False,
    localizer: BundleOption = None,
    threads: ThreadsOption = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="Processes decoding the next images (default: one per core, at most 4)."
        ),
    ] = None,
    include_all_radiographs: IncludeAllRadiographs = False,
    accept_blank_view: AcceptBlankView = False,
    accept_blank_body_part: AcceptBlankBodyPart = False,
    modality: Modalities = None,
    body_part_keyword: BodyPartKeywords = None,
    lateral_keyword: LateralKeywords = None,
    files: FilesList = None,
) -> None:
    """Find and name the vertebral bodies on every lateral TL-spine view of ARCHIVE.

    Writes a box file in the format `scan --boxes` reads (review or correct it before a scan),
    and beside it <name>.images.csv with each image's outcome.
    """
    if out.suffix.lower() != ".csv":
        raise UsageError(f"--out {out}: the box file is CSV, so its name must end in .csv")
    images = out.with_name(out.stem + ".images.csv")
    existing = [path for path in (out, images) if path.exists()]
    if existing and not overwrite:
        raise UsageError(
            f"{existing[0]} already exists (perhaps corrected by hand); pass --overwrite to "
            "replace it, or choose another --out"
        )

    import torch  # imported here so that other commands start without loading torch

    from auditor.localizer.archive import localize_archive
    from auditor.scan.config import default_decode_workers

    torch.set_num_threads(threads)
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
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} images localized"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("localize")
        summary = localize_archive(
            archive,
            out,
            localizer,
            rules,
            progress=lambda _name: bar.advance(task),
            workers=default_decode_workers() if workers is None else workers,
        )
    table = Table(title="tlaudit localize", show_header=False)
    table.add_row("files walked", str(summary.files))
    table.add_row("lateral TL candidates", str(summary.candidates))
    table.add_row("localized", str(summary.localized))
    table.add_row("nothing usable found", str(summary.nothing_found))
    table.add_row("  of them out of the localizer's distribution", str(summary.out_of_distribution))
    table.add_row("unreadable", str(summary.unreadable))
    table.add_row("boxes written", str(summary.boxes))
    console.print(table)
    console.print(f"box file: {escape(str(summary.box_file))}")
    console.print(f"per-image outcome: {escape(str(summary.image_file))}")


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def evaluate_localizer_command(
    archive: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, metavar="ARCHIVE", help="Archive folder."),
    ],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            exists=True,
            dir_okay=False,
            help="Truth boxes: box file or ground_truth.csv (CSV or COCO JSON).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", file_okay=False, help="Folder for the report files."),
    ] = Path("localizer-eval"),
    localizer: BundleOption = None,
    threads: ThreadsOption = 1,
    record: Annotated[
        bool,
        typer.Option("--record", help="Store the figures in the bundle's card (card.json)."),
    ] = False,
) -> None:
    """Measure a localizer on an annotated archive: recall, precision, IoU, levels, speed."""
    import torch  # imported here so that other commands start without loading torch

    from auditor.localizer.evaluate import evaluate_localizer

    torch.set_num_threads(threads)
    console = Console()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} images evaluated"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("evaluate")
        report = evaluate_localizer(
            localizer,
            archive,
            annotations,
            out,
            progress=lambda n: bar.update(task, completed=n),
            record=record,
        )
    table = Table(title=f"localizer on {escape(str(archive))}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("images (unreadable)", f"{report.images} ({report.failed_images})")
    table.add_row("whole truth bodies", str(report.truth_bodies))
    table.add_row("recall @ IoU 0.5", _fmt(report.recall))
    table.add_row("precision @ IoU 0.5", _fmt(report.precision))
    table.add_row(f"recall, fractured ({report.fractured_bodies})", _fmt(report.recall_fractured))
    table.add_row("mean IoU", _fmt(report.mean_iou))
    table.add_row("level accuracy", _fmt(report.level_accuracy))
    table.add_row(
        f"level accuracy, sacrum in view ({report.images_sacrum} images)",
        _fmt(report.level_accuracy_sacrum),
    )
    table.add_row("level accuracy, no sacrum", _fmt(report.level_accuracy_no_sacrum))
    table.add_row("seconds per radiograph (localizer)", f"{report.seconds_per_image:.3f}")
    table.add_row("seconds per radiograph (reading)", f"{report.read_seconds_per_image:.3f}")
    console.print(table)
    console.print(f"report: {escape(str(Path(out) / 'localizer_report.json'))}")
