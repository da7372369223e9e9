"""``tlaudit evaluate``: measure a bundle on a labelled set and write reports (thin command).

``--task classifier`` (the default) measures the fracture classifier; ``--task localizer``
measures a vertebra localizer bundle (the same report as ``auditor.localizer.evaluate``).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.cli.model_options import (
    HeatmapMethodOption,
    OperatingPointOption,
    PrecisionOption,
    point_name,
)
from auditor.cli.progress import stage_progress
from auditor.vocab import DEFAULT_HEATMAP, Device, Precision


class Task(str, Enum):
    """What kind of bundle ``evaluate`` measures."""

    CLASSIFIER = "classifier"
    LOCALIZER = "localizer"


def evaluate(
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
    out: Annotated[Path, typer.Option("--out", "-o", file_okay=False, help="Report folder.")],
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="ground_truth.csv with fracture_zone polygons (localisation).",
        ),
    ] = None,
    operating_point: OperatingPointOption = None,
    device: Annotated[
        Device,
        typer.Option(
            help="Where to run the model (with --task localizer the localizer runs on the CPU)."
        ),
    ] = Device.AUTO,
    precision: PrecisionOption = Precision.AUTO,
    heatmap_method: HeatmapMethodOption = DEFAULT_HEATMAP,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per inference batch.")] = 64,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    task: Annotated[
        Task, typer.Option(help="Evaluate a fracture classifier or a vertebra localizer bundle.")
    ] = Task.CLASSIFIER,
) -> None:
    """Evaluate a model bundle: metrics with CIs, operating points, localisation, reports.

    With --task localizer: detection recall and precision at IoU 0.5, mean IoU, level accuracy
    (overall and where the sacrum is in view), recall on fractured bodies, and speed.
    """
    if task is Task.LOCALIZER:
        from auditor.cli.localize import evaluate_localizer_command

        evaluate_localizer_command(archive, annotations, out, localizer=bundle)
        return
    # torch loads here, not at import, so that `tlaudit --help` and other commands stay quick
    from auditor.training.evaluate import EvaluateConfig, evaluate_bundle
    from auditor.training.metrics import format_pct
    from auditor.training.report import write_evaluation_reports

    config = EvaluateConfig(
        operating_point=point_name(operating_point),
        device=device.value,
        precision=precision.value,
        heatmap_method=heatmap_method.value,
        batch_size=batch_size,
        n_bootstrap=bootstrap,
        seed=seed,
    )
    console = Console()
    with stage_progress(console) as on_progress:
        ev = evaluate_bundle(bundle, archive, annotations, config, ground_truth, on_progress)
        paths = write_evaluation_reports(ev, out)
    console.print(escape(ev.bundle.card.headline()), highlight=False)
    table = Table(
        title=f"{ev.bundle.card.name} on {len(ev.data.records)} vertebrae "
        f"({ev.operating_point.name}, P >= {ev.operating_point.threshold:.3f})"
    )
    table.add_column("metric")
    table.add_column("this model (95% CI)", justify="right")
    table.add_column(f"source study ({ev.bundle.card.architecture})", justify="right")
    h = ev.headline
    for label, est in (
        ("accuracy", h.accuracy),
        ("sensitivity", h.sensitivity),
        ("specificity", h.specificity),
    ):
        ref = next((r[2] for r in ev.study_comparison() if r[0] == label), None)
        table.add_row(
            label,
            f"{format_pct(est.value)} ({format_pct(est.low)}-{format_pct(est.high)})",
            format_pct(ref, 0) if ref is not None else "",
        )
    ref_auc = next((r[2] for r in ev.study_comparison() if r[0] == "AUC"), None)
    table.add_row(
        "AUC",
        f"{h.auc.value:.3f} ({h.auc.low:.3f}-{h.auc.high:.3f})",
        f"{ref_auc:.2f}" if ref_auc is not None else "",
    )
    if ev.localisation is not None:
        loc = ev.localisation
        table.add_row(
            f"heatmap localisation ({ev.heatmap_method})",
            f"{format_pct(loc.score)} ({loc.hits}/{loc.total})",
            "81% (surgeon-judged)",
        )
        table.add_row(
            "heatmap mass in zone",
            f"{format_pct(loc.energy)} (zone {format_pct(loc.zone_share)} of crop)",
            "",
        )
    c = h.confusion
    table.caption = f"TN {c.tn}  FP {c.fp}  FN {c.fn}  TP {c.tp}; {ev.device}; {ev.seconds:.1f}s"
    console.print(table)
    for point, conf in ev.at_points.items():
        console.print(
            f"  {point:<10} sens {format_pct(conf.sensitivity)}"
            f"  spec {format_pct(conf.specificity)}  acc {format_pct(conf.accuracy)}",
            highlight=False,
        )
    if ev.data.skipped:
        console.print(
            f"[yellow]{len(ev.data.skipped)} annotation rows skipped[/] (see the reports)"
        )
    console.print(f"[bold green]reports:[/] {escape(str(paths['html'].parent))}")
