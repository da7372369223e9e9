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

from auditor.cli.labels import AnnotationsOption, annotations_file
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
    annotations: AnnotationsOption,
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
    bootstrap: Annotated[
        int,
        typer.Option(min=0, help="Patient-bootstrap resamples for the calibration error's CI."),
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    task: Annotated[
        Task, typer.Option(help="Evaluate a fracture classifier or a vertebra localizer bundle.")
    ] = Task.CLASSIFIER,
) -> None:
    """Evaluate a model bundle: metrics with CIs, operating points, localisation, reports.

    With --task localizer: detection recall and precision at IoU 0.5, mean IoU, level accuracy
    (overall and where the sacrum is in view), recall on fractured bodies, and speed.
    """
    console = Console()
    annotations = annotations_file(annotations, archive, out, console)
    if task is Task.LOCALIZER:
        from auditor.cli.localize import evaluate_localizer_command

        evaluate_localizer_command(archive, annotations, out, localizer=bundle)
        return
    # torch loads here, not at import, so that `tlaudit --help` and other commands stay quick
    from auditor.training.evaluate import EvaluateConfig, evaluate_bundle
    from auditor.training.intervals import MIN_COUNT, TOO_FEW
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
    table.add_column("cases", justify="right")
    table.add_column(f"source study ({ev.bundle.card.architecture})", justify="right")
    table.add_column("note")
    h = ev.headline
    for label, est in (
        ("accuracy", h.accuracy),
        ("sensitivity", h.sensitivity),
        ("specificity", h.specificity),
        ("PPV", h.ppv),
        ("NPV", h.npv),
    ):
        ref = next((r[2] for r in ev.study_comparison() if r[0] == label), None)
        table.add_row(
            label,
            est.percent(counts=False, mark=False),
            f"{est.count}/{est.total}",
            format_pct(ref, 0) if ref is not None else "",
            TOO_FEW if est.too_few else "",
        )
    ref_auc = next((r[2] for r in ev.study_comparison() if r[0] == "AUC"), None)
    c = h.confusion
    table.add_row(
        "AUC",
        h.auc.decimal(mark=False),
        f"{c.tp + c.fn}+/{c.tn + c.fp}-",
        f"{ref_auc:.2f}" if ref_auc is not None else "",
        TOO_FEW if h.auc.too_few else "",
    )
    ece = ev.reliability.ece
    table.add_row(
        "calibration error", ece.decimal(mark=False), "", "", TOO_FEW if ece.too_few else ""
    )
    if ev.localisation is not None:
        loc = ev.localisation
        table.add_row(
            f"heatmap localisation ({ev.heatmap_method})",
            format_pct(loc.score),
            f"{loc.hits}/{loc.total}",
            "81% (surgeon-judged)",
            "",
        )
        table.add_row(
            "heatmap mass in zone",
            f"{format_pct(loc.energy)} (zone {format_pct(loc.zone_share)} of crop)",
            "",
            "",
            "",
        )
    table.caption = f"TN {c.tn}  FP {c.fp}  FN {c.fn}  TP {c.tp}; {ev.device}; {ev.seconds:.1f}s"
    console.print(table)
    console.print(
        "  95% CIs: exact (Clopper-Pearson) by patient for proportions, DeLong by patient for "
        f"the AUC; a figure on fewer than {MIN_COUNT} cases is marked '{TOO_FEW}'",
        highlight=False,
    )
    points = Table(title="Operating points (vertebrae; studies; QA workload)")
    for column in (
        "point",
        "sensitivity",
        "specificity",
        "study sensitivity",
        "flags/1,000 studies",
        "confirmed/100 flags",
    ):
        points.add_column(column, justify="left" if column == "point" else "right")
    for point, m in ev.at_points.items():
        st = ev.studies[point]
        points.add_row(
            point,
            *(
                est.percent(counts=False, mark=False) + (" *" if est.too_few else "")
                for est in (m.sensitivity, m.specificity, st.sensitivity)
            ),
            *(
                est.decimal(digits, mark=False) + (" *" if est.too_few else "")
                for est, digits in ((st.flags_per_1000, 0), (st.confirmed_per_100_flags, 1))
            ),
        )
    points.caption = f"* {TOO_FEW} (fewer than {MIN_COUNT} cases)"
    console.print(points)
    if ev.data.skipped:
        console.print(
            f"[yellow]{len(ev.data.skipped)} annotation rows skipped[/] (see the reports)"
        )
    console.print(f"[bold green]reports:[/] {escape(str(paths['html'].parent))}")
