"""``tlaudit calibrate``: re-choose a bundle's operating points on a local labelled set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.cli.labels import AnnotationsOption, annotations_file
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
    annotations: AnnotationsOption,
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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Calibrate on a set with too few fractured or intact vertebrae all the same "
            "(the refusal names the minimum counts); the card records it.",
        ),
    ] = False,
    bootstrap: Annotated[
        int, typer.Option(min=0, help="Patient-bootstrap resamples for the thresholds' CIs.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Choose the operating points again on a labelled set the model never saw.

    Same rules as train: balanced = Youden's J, sensitive = sensitivity >= target, specific =
    specificity >= target. The weights are copied unchanged; the card keeps the old points and
    records where the new ones came from. Calibrate on data kept apart from the set you evaluate on.
    A set with too few fractured or intact vertebrae is refused without --force.
    """
    # torch loads here, not at import
    from auditor.training.calibrate import calibrate_bundle
    from auditor.training.intervals import TOO_FEW

    console = Console()
    annotations = annotations_file(annotations, archive, out, console)
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
            force=force,
            n_bootstrap=bootstrap,
            seed=seed,
        )
    summary = result.data_summary
    counts = summary["by_class"]
    table = Table(
        title=f"{result.bundle.card.name}: operating points on {summary['n_crops']} vertebrae "
        f"({counts.get('fracture', 0)} fractures, {summary['n_groups']} patients)"
    )
    for column in (
        "point",
        "old threshold",
        "new threshold (95% CI)",
        "sensitivity (95% CI)",
        "specificity (95% CI)",
    ):
        table.add_column(column, justify="left" if column == "point" else "right")
    for name, check in result.checks.items():
        table.add_row(
            name,
            "" if check.previous is None else f"{check.previous:.4f}",
            f"{check.threshold:.4f} ({check.threshold_low:.4f}-{check.threshold_high:.4f})",
            check.sensitivity.percent(mark=False) + (" *" if check.sensitivity.too_few else ""),
            check.specificity.percent(mark=False) + (" *" if check.specificity.too_few else ""),
        )
    table.caption = (
        "thresholds: patient bootstrap; sensitivity and specificity: exact, by patient, on the "
        f"calibration set itself (optimistic: the thresholds were chosen on it); * {TOO_FEW}"
    )
    console.print(table)
    if result.forced:
        console.print(
            f"[bold yellow]warning:[/] calibrated on {counts.get('fracture', 0)} fractured and "
            f"{counts.get('no_fracture', 0)} intact vertebrae, below the minimum (--force)",
            highlight=False,
        )
    for line in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
    console.print(f"[bold green]calibrated bundle:[/] {escape(str(result.bundle.path))}")
