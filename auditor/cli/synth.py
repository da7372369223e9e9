"""``tlaudit synth``: write a synthetic archive of lateral TL radiographs with ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditor.vocab import RenderPreset


def synth(
    out: Annotated[
        Path, typer.Argument(file_okay=False, help="Output folder (archive/ and tables go here).")
    ],
    studies: Annotated[
        int, typer.Option("--studies", "-n", min=1, help="Lateral TL studies to generate.")
    ] = 24,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="World seed: same seed, same bytes.")
    ] = 0,
    distractor_rate: Annotated[
        float,
        typer.Option(
            "--distractor-rate",
            min=0.0,
            max=5.0,
            help="Distractor objects per lateral study (AP spine, chest, extremity, CT, MR, SR, "
            "truncated, non-DICOM; each kind once before repeats).",
        ),
    ] = 0.15,
    miss_rate: Annotated[
        float,
        typer.Option(
            "--miss-rate",
            min=0.0,
            max=1.0,
            help="Share of fractured studies whose original read misses a fracture.",
        ),
    ] = 0.3,
    subtle_share: Annotated[
        float,
        typer.Option(
            "--subtle-share",
            min=0.0,
            max=1.0,
            help="Share of fractures drawn as A1 wedges of Genant grade 1, the subtlest kind "
            "(0: the usual mix, the same world as before this option).",
        ),
    ] = 0.0,
    subtle_bare: Annotated[
        bool,
        typer.Option(
            "--subtle-bare",
            help="Draw those subtle wedges without secondary signs (cortical gap, condensation "
            "band, bulge, endplate roughness): height loss alone.",
        ),
    ] = False,
    wedge_variants: Annotated[
        float,
        typer.Option(
            "--wedge-variants",
            min=0.0,
            max=1.0,
            help="Share of intact T7-L1 bodies with a physiologic wedge deep enough to mimic a "
            "grade-1 fracture (18-24.5 % height loss, no fracture signs; 0: none, the same world "
            "as before this option).",
        ),
    ] = 0.0,
    uncompressed: Annotated[
        bool,
        typer.Option(
            "--uncompressed",
            help="Write every image uncompressed: the same pixels and the same world otherwise; "
            "no JPEG encoder needed.",
        ),
    ] = False,
    render: Annotated[
        RenderPreset,
        typer.Option(
            "--render",
            help="Renderer setting (auditor/synth/rendering.py): 'default' is the world the "
            "bundled models were trained on; the others render the same patients, fractures, "
            "boxes and reads with a strongly different image formation (a foreign set for "
            "tlaudit guard-rates --renderer).",
        ),
    ] = RenderPreset.DEFAULT,
    max_side: Annotated[
        int,
        typer.Option(
            "--max-side",
            min=192,
            help="Largest image side in pixels (3000 keeps 0.1-0.2 mm spacing).",
        ),
    ] = 3000,
    workers: Annotated[
        int, typer.Option("--workers", "-j", min=1, help="Processes to generate in parallel.")
    ] = 1,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview/--no-preview", help="Also write contact_sheet.png with boxes and labels."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an archive this command wrote before in OUT."),
    ] = False,
) -> None:
    """Generate a synthetic ER archive: lateral thoracolumbar radiographs with planted missed
    fractures, distractors, box file, ground truth and original reads."""
    from auditor.synth.archive import write_archive  # pydicom and numpy load here
    from auditor.synth.config import SynthConfig

    config = SynthConfig(
        max_side=max_side,
        miss_rate=miss_rate,
        distractor_rate=distractor_rate,
        subtle_share=subtle_share,
        subtle_bare=subtle_bare,
        wedge_variant_share=wedge_variants,
        uncompressed=uncompressed,
        render=render,
    )
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("synth", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = write_archive(
            out,
            studies,
            seed,
            config,
            workers=workers,
            preview=preview,
            overwrite=overwrite,
            progress=advance,
        )
    elapsed = time.perf_counter() - start

    table = Table(title=f"Synthetic archive in {escape(str(out))}", show_header=False)
    table.add_row("lateral TL studies", str(summary.studies))
    table.add_row("fractured studies", str(summary.fractured_studies))
    table.add_row("planted missed-fracture studies", str(summary.planted_misses))
    table.add_row("studies without a read", str(summary.studies_without_read))
    table.add_row("vertebra boxes", str(summary.boxes))
    table.add_row("fractured vertebrae", str(summary.fractured_vertebrae))
    table.add_row(
        "distractors",
        ", ".join(f"{k} {v}" for k, v in sorted(summary.distractors.items())) or "none",
    )
    table.add_row("archive size", f"{summary.archive_bytes / 1e6:.1f} MB")
    table.add_row(
        "time", f"{elapsed:.1f} s ({summary.studies / max(elapsed, 1e-9) * 60:.0f} studies/min)"
    )
    if summary.preview is not None:
        table.add_row("contact sheet", escape(str(summary.preview)))
    Console().print(table)
