"""``tlaudit guard``: fit a domain guard onto an existing classifier bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor.vocab import Device


def guard_command(
    bundle: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Model bundle folder.")
    ],
    archive: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Archive folder with the images.")
    ],
    annotations: Annotated[
        Path,
        typer.Option(
            "--annotations",
            "--boxes",
            exists=True,
            dir_okay=False,
            help="Box file (CSV or COCO JSON) with a label per vertebra, from the world the "
            "model was trained on (never the images it will audit).",
        ),
    ],
    quantile: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=0.9999,
            help="Quantile of the held-out crops' distances that becomes the threshold.",
        ),
    ] = 0.99,
    archive_share: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=1.0,
            help="Share of an archive's crops out of distribution above which the archive is.",
        ),
    ] = 0.2,
    heldout_fraction: Annotated[
        float,
        typer.Option(min=0.1, max=0.5, help="Share of the patients held out for the threshold."),
    ] = 0.5,
    max_crops: Annotated[
        int, typer.Option(min=10, help="Most crops used on each side (fit, held out).")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the patient split and the subsampling.")] = 0,
    source: Annotated[
        str, typer.Option(help="What the set is, for the card (default: the file names).")
    ] = "",
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.AUTO,
    workers: Annotated[int, typer.Option(min=0, help="Processes that cut the crops.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a guard the bundle already has.")
    ] = False,
) -> None:
    """Fit the "out of its depth" guard of a classifier bundle and store it in the bundle.

    The labelled vertebrae are split by patient: the fit part gives the class centres and the
    shrunk covariance of the network's penultimate features, the held-out part the threshold
    (see docs/models.md). Writes guard.safetensors and the card's guard record; the weights are
    untouched. A bundle that already has a guard is refused without --force.
    """
    # torch loads here, not at import
    from auditor.training.guard import fit_guard_on_archive

    console = Console()
    result = fit_guard_on_archive(
        bundle,
        archive,
        annotations,
        quantile=quantile,
        archive_share=archive_share,
        heldout_fraction=heldout_fraction,
        max_crops=max_crops,
        seed=seed,
        force=force,
        device=device.value,
        workers=workers,
        source=source,
    )
    guard = result.bundle.card.guard
    assert guard is not None  # fit_guard_on_archive attached one
    console.print(
        f"{escape(str(result.bundle.path))}: domain guard fitted on {result.n_fit} crops, "
        f"threshold on {result.n_heldout} held-out crops ({result.n_patients} patients)\n"
        f"  {escape(guard.describe())}",
        highlight=False,
    )
