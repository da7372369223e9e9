"""``tlaudit calibrate``: re-choose a bundle's operating points on a local labelled set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.cli.model_options import PrecisionOption
from auditor.cli.progress import stage_progress
from auditor.vocab import Device, Precision


def calibrate(
    bundle: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Model bundle folder.")
    ],
    archive: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Archive folder with the images.")
    ],
    annotations: Annotated[
        Path,
        typer.Option(exists=True, dir_okay=False, help="Box file with a label per vertebra."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            file_okay=False,
            help="Folder of the calibrated bundle (may be BUNDLE itself: its card is replaced).",
        ),
    ],
    target: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=1.0,
            help="Sensitivity of 'sensitive' and specificity of 'specific'.",
        ),
    ] = 0.95,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.AUTO,
    precision: PrecisionOption = Precision.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per inference batch.")] = 128,
) -> None:
    """Choose the operating points again on a labelled set the model never saw.

    Same rules as train: balanced = Youden's J, sensitive = sensitivity >= target, specific =
    specificity >= target. The weights are copied unchanged; the card keeps the old points and
    records where the new ones came from. Calibrate on data kept apart from the set you evaluate on.
    """
    from auditor.training.calibrate import calibrate_bundle  # torch loads here, not at import
    from auditor.training.metrics import format_pct

    console = Console()
    with stage_progress(console) as on_progress:
        result = calibrate_bundle(
            bundle,
            archive,
            annotations,
            out,
            device=device.value,
            precision=precision.value,
            batch_size=batch_size,
            target=target,
            on_progress=on_progress,
        )
    summary = result.data_summary
    counts = summary["by_class"]
    table = Table(
        title=f"{result.bundle.card.name}: operating points on {summary['n_crops']} vertebrae "
        f"({counts.get('fracture', 0)} fractures, {summary['n_groups']} patients)"
    )
    for column in ("point", "old threshold", "new threshold", "sensitivity", "specificity"):
        table.add_column(column, justify="left" if column == "point" else "right")
    for name, point in result.points.items():
        old = result.previous.get(name)
        table.add_row(
            name,
            f"{old.threshold:.4f}" if old else "",
            f"{point.threshold:.4f}",
            format_pct(point.sensitivity),
            format_pct(point.specificity),
        )
    table.caption = "sensitivity and specificity on the calibration set itself"
    console.print(table)
    console.print(f"[bold green]calibrated bundle:[/] {escape(str(result.bundle.path))}")
