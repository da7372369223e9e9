"""``tlaudit guard``: fit a domain guard onto an existing classifier bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor.cli.evaluate import Task
from auditor.errors import UsageError
from auditor.vocab import Device


def guard_command(
    bundle: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Model bundle folder.")
    ],
    archive: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Archive folder with the images.")
    ],
    annotations: Annotated[
        Path | None,
        typer.Option(
            "--annotations",
            "--boxes",
            exists=True,
            dir_okay=False,
            help="Box file (CSV or COCO JSON) with a label per vertebra, from the world the "
            "model was trained on (never the images it will audit); not with --task localizer.",
        ),
    ] = None,
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
        int,
        typer.Option(
            min=10,
            help="Most crops (images with --task localizer) used on each side (fit, held out).",
        ),
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the patient split and the subsampling.")] = 0,
    source: Annotated[
        str, typer.Option(help="What the set is, for the card (default: the file names).")
    ] = "",
    method: Annotated[
        str,
        typer.Option(
            help="Guard method (docs/models.md, 'The domain guard'); default: the "
            "architecture's (auditor.model.stage_guard.default_method).",
        ),
    ] = "",
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.AUTO,
    workers: Annotated[int, typer.Option(min=0, help="Processes that cut the crops.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a guard the bundle already has.")
    ] = False,
    task: Annotated[
        Task, typer.Option(help="Guard a fracture classifier or a vertebra localizer bundle.")
    ] = Task.CLASSIFIER,
) -> None:
    """Fit the "out of its depth" guard of a classifier bundle and store it in the bundle.

    The labelled vertebrae are split by patient: the fit part gives the class centres and the
    shrunk covariance of the network's features, the held-out part the threshold (see
    docs/models.md). Writes guard.safetensors and the card's guard record; the weights are
    untouched. A bundle that already has a guard is refused without --force.

    With --task localizer: BUNDLE is a localizer bundle and the guard is fitted on the lateral
    TL images of ARCHIVE (no annotations), split by patient in the same way.
    """
    if task is Task.LOCALIZER:
        if annotations is not None or method:
            raise UsageError("--task localizer takes no --annotations and no --method")
        _guard_localizer(
            bundle,
            archive,
            quantile,
            archive_share,
            heldout_fraction,
            max_crops,
            seed,
            source,
            force,
        )
        return
    if annotations is None:
        raise UsageError("--annotations is required to guard a classifier bundle")
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
        method=method or None,
    )
    guard = result.bundle.card.guard
    assert guard is not None  # fit_guard_on_archive attached one
    console.print(
        f"{escape(str(result.bundle.path))}: domain guard fitted on {result.n_fit} crops, "
        f"threshold on {result.n_heldout} held-out crops ({result.n_patients} patients)\n"
        f"  {escape(guard.describe())}",
        highlight=False,
    )


def _guard_localizer(
    bundle: Path,
    archive: Path,
    quantile: float,
    archive_share: float,
    heldout_fraction: float,
    max_images: int,
    seed: int,
    source: str,
    force: bool,
) -> None:
    """``tlaudit guard --task localizer``."""
    from auditor.localizer.guard_fit import fit_guard_on_localizer

    result = fit_guard_on_localizer(
        bundle,
        archive,
        quantile=quantile,
        archive_share=archive_share,
        heldout_fraction=heldout_fraction,
        max_images=max_images,
        seed=seed,
        force=force,
        source=source,
    )
    skipped = f"; {result.unreadable} unreadable images skipped" if result.unreadable else ""
    Console().print(
        f"{escape(str(result.folder))}: localizer domain guard fitted on {result.n_fit} images, "
        f"threshold on {result.n_heldout} held-out images ({result.n_patients} patients)"
        f"{skipped}\n  {escape(result.guard.describe())}",
        highlight=False,
    )


def guard_rates_command(
    bundle: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Model bundle folder.")
    ],
    heldout: Annotated[
        list[Path],
        typer.Option(
            exists=True,
            file_okay=False,
            help="A tlaudit synth folder (archive/ and ground_truth.csv) the guard never saw; "
            "repeat for several. The first also gives the inverted and noisy crops.",
        ),
    ],
    spacing: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A tlaudit synth folder at another pixel spacing (--max-side) than the "
            "training data's; foreign.",
        ),
    ] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Folder of radiographs without a TL spine: a grid of forced boxes on each.",
        ),
    ] = None,
    detections: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="COCO detection file of real vertebrae (lateral views, images/ beside it).",
        ),
    ] = None,
    max_crops: Annotated[int, typer.Option(min=1, help="Most crops per synthetic set.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the subsampling and the noise.")] = 0,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.AUTO,
    cost: Annotated[
        bool, typer.Option(help="Also time the guard against the classifying forward pass.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Write the figures as JSON here.")
    ] = None,
) -> None:
    """Measure a bundle's domain guard: the share of crops it marks out of distribution on
    held-out synthetic worlds (should be low) and on foreign sets (should be high), and its cost.

    For comparison the energy score (thresholded at the 0.99 quantile of the first held-out
    world) is counted on the same crops.
    """
    import json

    from auditor.model.bundle import load_bundle
    from auditor.model.infer import select_device
    from auditor.training import guard_rates as gr

    console = Console()
    loaded = load_bundle(bundle)
    size, margin = loaded.card.input_size, loaded.card.crop_margin
    sets: list[gr.CropSet] = []
    for i, world in enumerate(heldout):
        crops = gr.world_crops(world, size, margin, max_crops, seed + i)
        sets.append(gr.CropSet(f"held-out {world.name}", crops, False, str(world)))
    first = sets[0].crops
    sets.append(gr.CropSet("inverted", gr.inverted(first), True, f"{heldout[0].name}, inverted"))
    sets.append(
        gr.CropSet(
            "heavy noise",
            gr.noisy(first, seed=seed),
            True,
            f"{heldout[0].name} + Gaussian noise sd {gr.HEAVY_NOISE}",
        )
    )
    for i, world in enumerate(spacing or []):
        crops = gr.world_crops(world, size, margin, max_crops, seed + 100 + i)
        sets.append(gr.CropSet(f"spacing {world.name}", crops, True, str(world)))
    if corpus is not None:
        files = [p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")]
        crops, skipped = gr.grid_crops(files, size, margin)
        for reason in skipped:
            console.print(f"  corpus: skipped {escape(reason)}", highlight=False)
        sets.append(
            gr.CropSet(
                f"corpus {corpus.name}",
                crops,
                True,
                f"{len(files) - len(skipped)} readable radiographs of {corpus}, 4 x 4 forced boxes",
            )
        )
    for path in detections or []:
        sets.append(
            gr.CropSet(
                f"real vertebrae {path.parent.name}",
                gr.coco_crops(path, size, margin),
                True,
                f"lateral-view boxes of {path}",
            )
        )
    dev = select_device(device.value)
    rates = gr.measure_guard(loaded, sets, dev)
    for r in rates:
        kind = "foreign" if r.foreign else "held-out"
        energy = "" if r.energy_flagged is None else f"; energy score {r.energy_flagged / r.n:6.1%}"
        console.print(
            f"{escape(r.name):<32} {kind:<8} {r.flagged:>5} of {r.n:>5} flagged "
            f"({r.share:6.1%}); median distance {r.median_distance:.2f}{energy}",
            highlight=False,
        )
    result: dict[str, object] = {
        "bundle": str(loaded.path),
        "guard_sha256": loaded.card.guard.sha256 if loaded.card.guard else "",
        "threshold": loaded.card.guard.threshold if loaded.card.guard else None,
        "seed": seed,
        "rates": [r.as_dict() for r in rates],
    }
    if cost:
        measured = gr.guard_cost(loaded, first[:64], dev)
        console.print(
            f"guard cost: {measured.distance_s * 1e6:.1f} us per crop against "
            f"{measured.forward_s * 1e3:.1f} ms for the forward pass without heatmaps "
            f"({measured.share:.3%})",
            highlight=False,
        )
        result["cost"] = measured.as_dict()
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
