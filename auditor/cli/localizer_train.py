"""``tlaudit train-localizer``: train a vertebra localizer bundle from scratch (thin command)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


def train_localizer_command(
    out: Annotated[
        Path, typer.Argument(file_okay=False, metavar="OUT", help="Bundle folder to write.")
    ],
    archive: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Annotated archive to train on."),
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Box file (CSV or COCO JSON) for --archive."
        ),
    ] = None,
    synth: Annotated[
        int, typer.Option(min=0, help="Also train on N generated synthetic lateral studies.")
    ] = 0,
    synth_seed: Annotated[int, typer.Option(help="Seed of the synthetic world.")] = 101,
    cache: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Prepared-image cache (.npz): used if it exists, written otherwise.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Start from this localizer bundle's weights."
        ),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1200,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option(min=1e-6, help="Peak learning rate.")] = 3e-3,
    max_minutes: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many minutes of training.")
    ] = None,
    working_size: Annotated[int, typer.Option(min=64, help="Working canvas side (px).")] = 192,
    width: Annotated[int, typer.Option(min=4, help="Network width (first stage channels).")] = 12,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for torch.")] = 1,
) -> None:
    """Train a vertebra localizer from scratch on annotated images and/or the synthetic world."""
    # imported here so that other commands start without loading torch
    from auditor.localizer.train import TrainConfig, TrainJob, run_training

    config = TrainConfig(
        working_size=working_size,
        cache_size=round(working_size * 1.25),
        width=width,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        max_minutes=max_minutes,
        seed=seed,
        threads=threads,
    )
    job = TrainJob(
        out=out,
        archive=archive,
        annotations=annotations,
        synth_studies=synth,
        synth_seed=synth_seed,
        cache=cache,
        init=init,
        reproduce="tlaudit " + shlex.join(sys.argv[1:]),
        config=config,
    )
    console = Console()
    started = time.perf_counter()

    def report(bar: Progress, task: TaskID, step: int, loss: float) -> None:
        bar.update(task, completed=step, loss=loss)
        # Redirected to a file, the bar shows nothing until the end: log a line now and then.
        if not console.is_terminal and step % 100 == 0:
            minutes = (time.perf_counter() - started) / 60
            console.print(f"step {step}, loss {loss:.3f}, {minutes:.1f} min", highlight=False)

    if not console.is_terminal:
        console.print("preparing training images (synthetic studies are generated first)")
    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("train", total=steps, loss=float("nan"))
        result = run_training(
            job, progress=lambda step, _total, loss: report(bar, task, step, loss)
        )
    console.print(
        f"wrote {escape(str(result.bundle))}: {result.steps} steps in "
        f"{result.seconds / 60:.1f} min, final loss {result.final_loss:.3f}"
    )
