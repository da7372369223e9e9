"""``tlaudit train``: train a fracture classifier bundle on local annotations (thin command)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    TimeRemainingColumn,
)
from rich.table import Table

from auditor.cli.labels import AnnotationsOption, annotations_file
from auditor.vocab import Device

if TYPE_CHECKING:
    from auditor.training.metrics import BinaryMetrics
    from auditor.training.progress import EpochRow


class ArchitectureChoice(str, Enum):
    RESNET18 = "resnet18"
    VGG16 = "vgg16"


class TrainableChoice(str, Enum):
    LAST2 = "last2"
    ALL = "all"


class MonitorChoice(str, Enum):
    BALANCED_ACCURACY = "balanced_accuracy"
    ACCURACY = "accuracy"
    AUC = "auc"
    LOSS = "loss"


class CropNormalisationChoice(str, Enum):
    NONE = "none"
    PERCENTILE = "percentile"


class ClassWeightingChoice(str, Enum):
    BALANCED = "balanced"
    SAMPLER = "sampler"
    NONE = "none"


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"expected positive integers, got {text!r}")
    return values


class PresetChoice(str, Enum):
    QUICK = "quick"
    PAPER = "paper"


class TrainingDataChoice(str, Enum):
    SYNTHETIC = "synthetic"
    CLINICAL = "clinical"


class _RichListener:
    """An overall bar over the whole run (its ETA), a bar per fit naming its fold and epoch, and
    one printed line per epoch."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.task: TaskID | None = None
        self.total = 0
        self.done_before_fit = 0
        self.fit_batches = 0
        self.title = ""
        self.epochs = 0

    def stage(self, text: str) -> None:
        self.console.print(f"[bold]>[/] {escape(text)}")

    def plan(self, total_batches: int) -> None:
        self.total = total_batches

    def start_fit(self, title: str, epochs: int, batches_per_epoch: int) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            if self.total:
                self.overall = self.progress.add_task("whole run (batches)", total=self.total)
        self.title, self.epochs = escape(title), epochs
        self.fit_batches = epochs * max(batches_per_epoch, 1)
        self.task = self.progress.add_task(
            f"{self.title}: epoch 1/{epochs}", total=self.fit_batches
        )
        self.console.print(
            f"  [dim]{'fit':<22} {'epoch':>5} {'lr':>9} {'train loss':>10} {'val loss':>9} "
            f"{'val acc':>8} {'val bal':>8} {'val AUC':>8} {'s':>6}[/]"
        )

    def batch_done(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)
            if self.overall is not None:
                self.progress.advance(self.overall)

    def epoch_done(self, row: EpochRow) -> None:
        mark = " [green]*[/]" if row.best else ""
        self.console.print(
            f"  {escape(row.fit[:22]):<22} {row.epoch:>5} {row.lr:>9.2e} {row.train_loss:>10.4f} "
            f"{row.val_loss:>9.4f} {row.val_accuracy:>8.4f} {row.val_balanced_accuracy:>8.4f} "
            f"{row.val_auc:>8.4f} {row.seconds:>6.1f}{mark}",
            highlight=False,
        )
        if self.progress is not None and self.task is not None and row.epoch < self.epochs:
            self.progress.update(
                self.task, description=f"{self.title}: epoch {row.epoch + 1}/{self.epochs}"
            )

    def end_fit(self) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        # a fit that stopped early (early stop, time limit) skips the rest of its batches
        self.done_before_fit += self.fit_batches
        if self.overall is not None:
            self.progress.update(self.overall, completed=self.done_before_fit)
        self.task = None

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.progress, self.task, self.overall = None, None, None


def train(
    ctx: typer.Context,
    archive: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Archive folder with the images.")
    ],
    annotations: AnnotationsOption,
    out: Annotated[
        Path, typer.Option("--out", "-o", file_okay=False, help="Bundle folder to write.")
    ],
    architecture: Annotated[
        ArchitectureChoice, typer.Option(help="Network (the study compared both).")
    ] = ArchitectureChoice.RESNET18,
    preset: Annotated[
        PresetChoice | None,
        typer.Option(
            help="A named recipe: 'quick' (a short fixed recipe for a CPU) or 'paper' (the "
            "source study's recipe and cross-validated search, these options' defaults). "
            "Options given on the command line override the preset's values. "
            "Without it: these options' defaults.",
        ),
    ] = None,
    estimate_only: Annotated[
        bool,
        typer.Option(
            "--estimate-only",
            help="Cut the crops, time a few batches, print the estimated duration and stop.",
        ),
    ] = False,
    pretrained: Annotated[
        str,
        typer.Option(
            help="Starting weights: 'auto' (ImageNet from torchvision's cache when there, "
            "otherwise the bundled classifier's; works offline), 'imagenet', 'bundled', 'none' "
            "(from scratch; all layers train) or a path to a state dict. The card records "
            "which start was used."
        ),
    ] = "auto",
    download_weights: Annotated[
        bool,
        typer.Option(
            "--download-weights/--no-download-weights",
            help="Let torchvision download missing ImageNet weights (needs a network).",
        ),
    ] = False,
    trainable: Annotated[
        TrainableChoice,
        typer.Option(
            help="Layers to retrain: 'last2' (study: last two residual blocks + head) or 'all'."
        ),
    ] = TrainableChoice.LAST2,
    input_size: Annotated[
        int, typer.Option(min=32, help="Crop side in pixels (study: 512).")
    ] = 512,
    feature_stride: Annotated[
        int,
        typer.Option(
            help="Downsampling of ResNet18's last feature map: 32 (torchvision, study), 16 or 8. "
            "Smaller gives finer heatmaps (input-size / stride cells a side) at more compute."
        ),
    ] = 32,
    box_jitter: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Also train on crops from boxes whose edges move by up to this fraction of the "
            "box size, so that localizer or annotator box errors do not change the call "
            "(0: off, as in the study).",
        ),
    ] = 0.0,
    jitter_copies: Annotated[
        int, typer.Option(min=0, help="Jittered crops per vertebra with --box-jitter.")
    ] = 2,
    crop_margin: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Context around each box, fraction of its longer side."
        ),
    ] = 0.15,
    crop_normalisation: Annotated[
        CropNormalisationChoice,
        typer.Option(
            help="Per-crop intensity normalisation before the ImageNet statistics: 'none' "
            "(study) or 'percentile' (stretch each crop's 1-99th percentiles to 0-1)."
        ),
    ] = CropNormalisationChoice.NONE,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the final fit (study: 200).")] = 200,
    lr_grid: Annotated[
        str, typer.Option(help="Learning rates tried by cross-validation, comma-separated.")
    ] = "0.00005,0.00016,0.0005",
    batch_grid: Annotated[
        str, typer.Option(help="Batch sizes tried by cross-validation, comma-separated.")
    ] = "16,32",
    cv_folds: Annotated[
        int,
        typer.Option(min=0, help="Patient-grouped folds (study: 10); 0 skips cross-validation."),
    ] = 10,
    cv_epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs per cross-validation fit (default: --epochs).")
    ] = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of patients held out as a test split.")
    ] = 0.1,
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.5,
            help="Share of training patients used to pick the epoch and operating points.",
        ),
    ] = 0.15,
    plateau_patience: Annotated[
        int,
        typer.Option(min=1, help="Epochs without improvement before the rate drops (study: 10)."),
    ] = 10,
    plateau_factor: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Rate cut factor (study: 0.1).")
    ] = 0.1,
    early_stop: Annotated[
        int,
        typer.Option(
            min=0, help="Stop after N epochs without improvement (0: never, as the study)."
        ),
    ] = 0,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Stop each fit after the epoch that ends past this many minutes, keeping its "
            "best epoch so far (default: no limit).",
        ),
    ] = None,
    monitor: Annotated[
        MonitorChoice,
        typer.Option(help="Validation metric for best epoch, scheduler and CV choice."),
    ] = MonitorChoice.BALANCED_ACCURACY,
    class_weighting: Annotated[
        ClassWeightingChoice,
        typer.Option(
            help="'balanced' (inverse-frequency loss weights), 'sampler' (class-balanced "
            "sample each epoch) or 'none'."
        ),
    ] = ClassWeightingChoice.BALANCED,
    rotation: Annotated[
        float, typer.Option(min=0.0, help="Augmentation: max rotation, degrees.")
    ] = 10.0,
    flip: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Augmentation: horizontal flip probability.")
    ] = 0.5,
    shift: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Augmentation: max shift, fraction of side.")
    ] = 0.1,
    zone_loss: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of a loss that pulls each fracture's evidence (the layer4 term of the "
            "heatmap) into its annotated fracture zone; needs zone polygons in the annotations "
            "(0: off, as in the study, whose heatmaps were never supervised).",
        ),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option(help="Seed for splits, initialisation and augmentation.")
    ] = 0,
    device: Annotated[Device, typer.Option(help="Where to train.")] = Device.AUTO,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes that decode and cut the images and augment the crops "
            "(0: all in this process; the crops are the same for any number).",
        ),
    ] = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for torch (default: torch's choice).")
    ] = None,
    name: Annotated[
        str, typer.Option(help="Model name in the card (default: the folder name).")
    ] = "",
    source: Annotated[str, typer.Option(help="Training-data description for the card.")] = "",
    training_data: Annotated[
        TrainingDataChoice | None,
        typer.Option(
            help="What the annotated images are, for the card: 'synthetic' (tlaudit synth) or "
            "'clinical'. A synthetic run's held-out figures say 'synthetic only'.",
        ),
    ] = None,
) -> None:
    """Train a fracture / no-fracture classifier with the study's recipe, grouped by patient.

    It prints an estimate of its duration from a few timed batches before it starts, and the
    held-out test split's figures with 95% intervals at the end, with a warning when they say the
    model may be no better than chance.
    """
    # torch loads here, not at import, so that `tlaudit --help` and other commands stay quick
    from auditor.training.config import TrainConfig, apply_preset
    from auditor.training.data import AugmentConfig
    from auditor.training.train import estimate_training, train_bundle

    values = dict(
        architecture=architecture.value,
        pretrained=pretrained,
        allow_download=download_weights,
        trainable=trainable.value,
        input_size=input_size,
        feature_stride=feature_stride,
        box_jitter=box_jitter,
        jitter_copies=jitter_copies,
        crop_margin=crop_margin,
        crop_normalisation=crop_normalisation.value,
        epochs=epochs,
        lr_grid=_floats(lr_grid),
        batch_grid=_ints(batch_grid),
        cv_folds=cv_folds,
        cv_epochs=cv_epochs,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        plateau_patience=plateau_patience,
        plateau_factor=plateau_factor,
        early_stop=early_stop,
        max_minutes=max_minutes,
        monitor=monitor.value,
        class_weighting=class_weighting.value,
        augment=AugmentConfig(rotation=rotation, flip=flip, shift=shift),
        zone_loss=zone_loss,
        seed=seed,
        device=device.value,
        workers=workers,
        threads=threads,
        name=name,
        source=source,
        training_data=training_data.value if training_data else "",
    )
    # by name: typer vendors its own click, whose ParameterSource is not click's
    given = {
        key
        for key in ctx.params
        if getattr(ctx.get_parameter_source(key), "name", "DEFAULT") != "DEFAULT"
    }
    config = TrainConfig(**apply_preset(values, preset.value if preset else None, given))
    console = Console()
    annotations = annotations_file(annotations, archive, out, console)
    if preset is not None:
        console.print(f"[bold]>[/] preset {preset.value} (options given here override it)")
    listener = _RichListener(console)
    try:
        if estimate_only:
            estimate_training(archive, annotations, config, listener)
            return
        result = train_bundle(archive, annotations, out, config, listener)
    finally:
        listener.close()
    card = result.card
    table = Table(title="Operating points (validation split)")
    for col in ("point", "threshold", "sensitivity", "specificity"):
        table.add_column(col, justify="right" if col != "point" else "left")
    for op in card.operating_points.values():
        table.add_row(
            op.name, f"{op.threshold:.4f}", f"{op.sensitivity:.3f}", f"{op.specificity:.3f}"
        )
    console.print(table)
    if result.test is not None:
        console.print(_test_table(result.test, card.validation))
    console.print(f"[bold green]bundle written:[/] {escape(str(result.bundle_dir))}")
    console.print(escape(card.headline()), highlight=False)
    if result.warning:
        console.print(f"[bold red]WARNING:[/] {escape(result.warning)}", highlight=False)


def _test_table(test: dict[str, BinaryMetrics], validation: dict[str, Any]) -> Table:
    """The held-out test split's figures with their intervals, at each operating point."""
    from auditor.training.intervals import MIN_COUNT, TOO_FEW

    auc = next(iter(test.values())).auc
    table = Table(
        title=f"Held-out test split: {validation['n_vertebrae']} vertebrae "
        f"({validation['n_fractures']} fractures) of {validation['n_patients']} patients; "
        f"AUC {auc.decimal(mark=False)}{' *' if auc.too_few else ''}"
    )
    for col in ("point", "sensitivity", "specificity", "PPV", "NPV"):
        table.add_column(col, justify="right" if col != "point" else "left")
    for name, m in test.items():
        table.add_row(
            name,
            *(
                est.percent(counts=False, mark=False) + (" *" if est.too_few else "")
                for est in (m.sensitivity, m.specificity, m.ppv, m.npv)
            ),
        )
    table.caption = (
        f"95% CIs: exact by patient (proportions), DeLong (AUC); * {TOO_FEW} (fewer than "
        f"{MIN_COUNT} cases)"
    )
    return table
