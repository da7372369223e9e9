"""``tlaudit guard``: fit a domain guard onto an existing classifier bundle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from auditor.cli.evaluate import Task
from auditor.errors import UsageError
from auditor.scan.archive_rates import DEFAULT_DRAWS, DEFAULT_SIZES
from auditor.vocab import Device

if TYPE_CHECKING:  # the CLI never loads torch at import
    import numpy.typing as npt
    import torch

    from auditor.localizer.infer import Localizer


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
        list[Path] | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A tlaudit synth folder (archive/ and ground_truth.csv) the guard never saw; "
            "repeat for several. The first also gives the inverted and noisy crops.",
        ),
    ] = None,
    spacing: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A tlaudit synth folder at another pixel spacing (--max-side) than the "
            "training data's; foreign.",
        ),
    ] = None,
    renderer: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A tlaudit synth folder rendered with another renderer setting (tlaudit synth "
            "--render) than the training data's; foreign; repeat for several. With --task "
            "localizer, its images.",
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
    drr: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            help="With --task localizer: DRRs of real spines, a file or a folder (its images/ "
            "subfolder when it has one); repeat for several; foreign.",
        ),
    ] = None,
    max_crops: Annotated[int, typer.Option(min=1, help="Most crops per synthetic set.")] = 400,
    max_images: Annotated[
        int, typer.Option(min=1, help="With --task localizer: most images per held-out world.")
    ] = 250,
    runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--runs",
            help="Instead of crop sets: the run folder (--out) of a scan with this bundle of an "
            "archive like the training data; repeat for several, pooled. Archives drawn from "
            "its studies measure the archive rules' false banners.",
        ),
    ] = None,
    foreign_runs: Annotated[
        list[Path] | None,
        typer.Option(
            "--foreign-runs",
            help="With --runs: the run folder of a scan of an archive unlike the training data; "
            "repeat for several, each its own pool. Measures the archive rules' true banners.",
        ),
    ] = None,
    sizes: Annotated[
        str,
        typer.Option(help="With --runs: archive sizes to draw, in studies, comma-separated."),
    ] = ",".join(map(str, DEFAULT_SIZES)),
    draws: Annotated[
        int, typer.Option(min=1, help="With --runs: archives drawn per pool and size.")
    ] = DEFAULT_DRAWS,
    seed: Annotated[
        int, typer.Option(help="Seed of the subsampling and the noise (with --runs: of the draws).")
    ] = 0,
    device: Annotated[Device, typer.Option(help="Where to run the model.")] = Device.AUTO,
    cost: Annotated[
        bool, typer.Option(help="Also time the guard against the classifying forward pass.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Write the figures as JSON here.")
    ] = None,
    task: Annotated[
        Task, typer.Option(help="Measure a fracture classifier's or a vertebra localizer's guard.")
    ] = Task.CLASSIFIER,
    localizer: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="A localizer bundle with a guard: also ask its guard about each crop's whole "
            "image (the image-level check with a box file), and count the crops either check "
            "flags.",
        ),
    ] = None,
) -> None:
    """Measure a bundle's domain guard: the share of crops it marks out of distribution on
    held-out synthetic worlds (should be low) and on foreign sets (should be high), and its cost.

    For comparison the energy score (thresholded at the 0.99 quantile of the first held-out
    world) is counted on the same crops. With --localizer, the localizer's guard is also asked
    about the image each crop was cut from (inverted for the inverted crops; as it is for the
    noisy ones, whose noise is the crops'), and the crops flagged by either check are counted.

    With --task localizer: BUNDLE is a localizer bundle and the share is of whole images the
    guard refuses, through the localizer as a scan runs it: the held-out worlds' lateral TL
    candidates (at most --max-images each), the first world's images inverted and with Gaussian
    noise at full resolution and at the network's input size, the --renderer worlds' candidates,
    every readable file of --corpus and the --drr images; the cost is the guard against the
    localizing forward pass.

    With --runs: no crop set and no model run. From the findings.csv (and image_check.csv) of
    scans with BUNDLE, archives of each --sizes are drawn with replacement from whole studies,
    --draws per size, and judged by the scan's archive rules: how often the share rule, the
    count rule and either would raise the banner, on the --runs pooled (false banners) and on
    each --foreign-runs (true ones).
    """
    if runs or foreign_runs:
        crop_sets = heldout or spacing or renderer or corpus or detections or drr or localizer
        if crop_sets or task is Task.LOCALIZER:
            raise UsageError(
                "--runs measures the archive rules on scanned studies: it takes no crop sets "
                "(--heldout, --spacing, --renderer, --corpus, --detections, --drr), no "
                "--localizer and no --task localizer"
            )
        if not runs:
            raise UsageError("--foreign-runs needs --runs: the scans like the training data")
        _guard_rates_runs(bundle, runs, foreign_runs or [], sizes, draws, seed, out)
        return
    if not heldout:
        raise UsageError(
            "give --heldout (crop sets of synthetic worlds) or --runs (scanned run folders)"
        )
    if task is Task.LOCALIZER:
        if spacing or detections or localizer:
            raise UsageError(
                "--task localizer takes no --spacing, no --detections and no --localizer"
            )
        _guard_rates_localizer(
            bundle, heldout, renderer or [], corpus, drr or [], max_images, seed, device, cost, out
        )
        return
    if drr:
        raise UsageError("--drr is for --task localizer; give a classifier --detections")
    from auditor.model.bundle import load_bundle
    from auditor.model.infer import select_device
    from auditor.model.perturb import HEAVY_NOISE, inverted, noisy
    from auditor.training import guard_rates as gr

    console = Console()
    loaded = load_bundle(bundle)
    size, margin = loaded.card.input_size, loaded.card.crop_margin
    dev = select_device(device.value)
    check = _ImageCheck.load(localizer, dev)
    sets: list[gr.CropSet] = []
    for i, world in enumerate(heldout):
        crops, images = gr.world_crops(world, size, margin, max_crops, seed + i)
        sets.append(gr.CropSet(f"held-out {world.name}", crops, False, str(world), check(images)))
    first, first_images = (
        sets[0].crops,
        gr.world_crops(heldout[0], size, margin, max_crops, seed)[1],
    )
    sets.append(
        gr.CropSet(
            "inverted",
            inverted(first),
            True,
            f"{heldout[0].name}, inverted",
            check(first_images, inverted=True),
        )
    )
    sets.append(
        gr.CropSet(
            "heavy noise",
            noisy(first, seed=seed),
            True,
            f"{heldout[0].name} + Gaussian noise sd {HEAVY_NOISE}",
            sets[0].image_out,
        )
    )
    for i, world in enumerate(spacing or []):
        crops, images = gr.world_crops(world, size, margin, max_crops, seed + 100 + i)
        sets.append(gr.CropSet(f"spacing {world.name}", crops, True, str(world), check(images)))
    for i, world in enumerate(renderer or []):
        crops, images = gr.world_crops(world, size, margin, max_crops, seed + 200 + i)
        sets.append(gr.CropSet(f"renderer {world.name}", crops, True, str(world), check(images)))
    if corpus is not None:
        files = [p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")]
        crops, skipped, images = gr.grid_crops(files, size, margin)
        for reason in skipped:
            console.print(f"  corpus: skipped {escape(reason)}", highlight=False)
        sets.append(
            gr.CropSet(
                f"corpus {corpus.name}",
                crops,
                True,
                f"{len(files) - len(skipped)} readable radiographs of {corpus}, 4 x 4 forced boxes",
                check(images),
            )
        )
    for path in detections or []:
        crops, images = gr.coco_crops(path, size, margin)
        sets.append(
            gr.CropSet(
                f"real vertebrae {path.parent.name}",
                crops,
                True,
                f"lateral-view boxes of {path}",
                check(images),
            )
        )
    rates = gr.measure_guard(loaded, sets, dev)
    for r in rates:
        energy = "" if r.energy_flagged is None else f"; energy score {r.energy_flagged / r.n:6.1%}"
        either = (
            ""
            if r.either_flagged is None
            else f"; image check {r.image_flagged}, either {r.either_flagged / r.n:6.1%}"
        )
        console.print(
            _rate_line(r.name, r.foreign, r.flagged, r.n, r.median_distance) + energy + either,
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
        if check.localizer is not None:
            per_image = gr.boxes_per_image(heldout[0])
            image_s = check.cost(sorted(set(first_images))[:16])
            share = image_s / (measured.forward_s * per_image)
            console.print(
                f"image check cost: {image_s * 1e3:.1f} ms per image against "
                f"{measured.forward_s * per_image * 1e3:.1f} ms for classifying its "
                f"{per_image:.1f} vertebrae ({share:.1%}; the image already decoded)",
                highlight=False,
            )
            result["image_check_cost"] = {
                "s_per_image": image_s,
                "crops_per_image": per_image,
                "share_of_classifying_pass": share,
            }
    if check.localizer is not None:
        result["localizer"] = str(check.localizer.path)
        assert check.localizer.guard is not None
        result["localizer_guard_sha256"] = check.localizer.guard.sha256
    _write_figures(out, result)


@dataclass
class _ImageCheck:
    """``guard-rates --localizer``: the localizer guard's verdict on each crop's whole image,
    each file read once per change (None without a localizer: no verdicts)."""

    localizer: Localizer | None = None
    seen: dict[tuple[Path, bool], bool] = field(default_factory=dict)

    @classmethod
    def load(cls, bundle: Path | None, device: torch.device) -> _ImageCheck:
        if bundle is None:
            return cls()
        from auditor.localizer.infer import load_localizer

        loaded = load_localizer(bundle, device)
        if loaded.guard is None:
            raise UsageError(
                f"{bundle} has no domain guard; fit one with tlaudit guard --task localizer"
            )
        return cls(loaded)

    def __call__(self, images: Sequence[Path], inverted: bool = False) -> npt.NDArray[Any] | None:
        """Per crop, whether its image (``images``, one per crop) is refused; None without a
        localizer. An image that cannot be read counts as not refused."""
        if self.localizer is None or self.localizer.guard is None:
            return None
        import numpy as np

        from auditor.localizer import guard_rates as lgr

        todo = sorted({p for p in images if (p, inverted) not in self.seen})
        change = lgr.Change.INVERTED if inverted else lgr.Change.NONE
        distances = lgr.image_verdicts(self.localizer, todo, change)
        threshold = self.localizer.guard.threshold
        for p in todo:
            self.seen[(p, inverted)] = distances.get(p, 0.0) > threshold
        return np.array([self.seen[(p, inverted)] for p in images], dtype=bool)

    def cost(self, paths: Sequence[Path]) -> float:
        """Seconds per image of the check
        (:func:`~auditor.localizer.guard_rates.image_check_cost`)."""
        assert self.localizer is not None
        from auditor.io.radiograph import read_radiograph
        from auditor.localizer import guard_rates as lgr

        images = [read_radiograph(p).pixels for p in paths]
        return lgr.image_check_cost(self.localizer, images)


def _rate_line(name: str, foreign: bool, flagged: int, n: int, median_distance: float) -> str:
    """One row of ``guard-rates``' table, markup escaped."""
    kind = "foreign" if foreign else "held-out"
    return (
        f"{escape(name):<32} {kind:<8} {flagged:>5} of {n:>5} flagged "
        f"({flagged / n:6.1%}); median distance {median_distance:.2f}"
    )


def _write_figures(out: Path | None, result: dict[str, object]) -> None:
    """Write ``guard-rates``' figures as JSON to ``out``, when given."""
    import json

    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")


def _guard_rates_runs(
    bundle: Path,
    runs: list[Path],
    foreign_runs: list[Path],
    sizes_text: str,
    draws: int,
    seed: int,
    out: Path | None,
) -> None:
    """``tlaudit guard-rates --runs``: the archive rules on archives drawn from scanned studies
    (:mod:`auditor.scan.archive_rates`)."""
    from rich.table import Table

    from auditor.model.bundle import load_bundle
    from auditor.scan import archive_rates as ar

    sizes = ar.parse_sizes(sizes_text)
    loaded = load_bundle(bundle)
    pools = [ar.load_pool("in-domain", runs, loaded, foreign=False)]
    pools += [ar.load_pool(p.name, [p], loaded, foreign=True) for p in foreign_runs]
    guard = loaded.card.guard
    assert guard is not None  # load_pool refuses a bundle without one
    rates = ar.draw_rates(pools, guard, sizes, draws, seed)
    console = Console(highlight=False)
    rule = guard.count_rule
    console.print(
        f"Archives marked, in % of {draws} drawn per size with replacement from whole studies "
        f"(seed {seed}): share rule (more than {guard.archive_share:.0%} of the crops or images) "
        f"/ count rule (floor {rule.floor:g}, crop_rate {rule.crop_rate:g}, alpha "
        f"{rule.alpha:g}) / either"
    )
    for pool in pools:
        kind = "foreign" if pool.foreign else "the --runs pooled, like the training data"
        where = ", ".join(str(p) for p in pool.runs)
        console.print(
            f"  {escape(pool.name)} ({kind}: {escape(where)}): {pool.studies} studies, "
            f"{int(pool.crops.sum())} crops, {int(pool.crops_out.sum())} out of distribution "
            f"({pool.out_rate:.1%}), {int(pool.images_out.sum())} of "
            f"{int(pool.images.sum())} image-checked images refused"
        )
    table = Table("pool", "rule", *(str(n) for n in sizes), title="studies per archive")
    for pool, per_size in zip(pools, rates, strict=True):
        for i, rule_name in enumerate(("share", "count", "either")):
            cells = [_percent((r.share_rule, r.count_rule, r.either)[i]) for r in per_size]
            table.add_row(
                escape(pool.name) if i == 0 else "", rule_name, *cells, end_section=i == 2
            )
    console.print(table)
    result: dict[str, object] = {
        "bundle": str(loaded.path),
        "model_sha256": loaded.sha256,
        "guard_sha256": guard.sha256,
        "archive_share": guard.archive_share,
        "count_rule": rule.record(),
        "seed": seed,
        "draws": draws,
        "sizes": list(sizes),
        "pools": [
            {**pool.describe(), "rates": [r.as_dict() for r in per_size]}
            for pool, per_size in zip(pools, rates, strict=True)
        ],
    }
    _write_figures(out, result)


def _percent(share: float) -> str:
    """A share as the tables print it: 38.2, 0.1, 0, 100."""
    return f"{100 * share:.1f}".removesuffix(".0")


def _guard_rates_localizer(
    bundle: Path,
    heldout: list[Path],
    renderer: list[Path],
    corpus: Path | None,
    drr: list[Path],
    max_images: int,
    seed: int,
    device: Device,
    cost: bool,
    out: Path | None,
) -> None:
    """``tlaudit guard-rates --task localizer``."""
    import torch

    from auditor.localizer import guard_rates as lgr
    from auditor.localizer.infer import load_localizer
    from auditor.model.infer import select_device
    from auditor.model.perturb import HEAVY_NOISE

    # one thread: the timings are per image on a shared machine, and comparable between runs
    torch.set_num_threads(1)
    console = Console(highlight=False)
    localizer = load_localizer(bundle, select_device(device.value))
    guard = localizer.guard
    if guard is None:
        raise UsageError(
            f"{bundle} has no domain guard; fit one with tlaudit guard --task localizer"
        )
    sets: list[lgr.ImageSet] = []
    for i, world in enumerate(heldout):
        paths = lgr.world_images(world, max_images, seed + i)
        sets.append(lgr.ImageSet(f"held-out {world.name}", paths, False, str(world)))
    first, name = sets[0].paths, heldout[0].name
    size = localizer.card.working_size
    # inverted images and full-resolution noise should be accepted: the localizer was trained
    # with both (auditor.localizer.data); noise at its input size should be refused
    for label, change, foreign in (
        ("inverted", lgr.Change.INVERTED, False),
        ("noise, full resolution", lgr.Change.NOISE_FULL, False),
        (f"noise, at {size} px input", lgr.Change.NOISE_INPUT, True),
    ):
        sd = "" if change is lgr.Change.INVERTED else f", sd {HEAVY_NOISE}"
        sets.append(lgr.ImageSet(label, first, foreign, f"{name}, {change.value}{sd}", change))
    for i, world in enumerate(renderer):
        paths = lgr.world_images(world, max_images, seed + 200 + i)
        sets.append(lgr.ImageSet(f"renderer {world.name}", paths, True, str(world)))
    if corpus is not None:
        files = lgr.image_files([corpus])
        sets.append(
            lgr.ImageSet(f"corpus {corpus.name}", files, True, f"readable files of {corpus}")
        )
    if drr:
        files = lgr.image_files(drr)
        where = ", ".join(str(p) for p in drr)
        sets.append(lgr.ImageSet("DRRs", files, True, f"DRRs of real spines: {where}"))
    rates = lgr.measure_localizer_guard(localizer, sets, seed)
    for r in rates:
        if r.unreadable:
            console.print(f"  {escape(r.name)}: {len(r.unreadable)} unreadable files skipped")
        console.print(_rate_line(r.name, r.foreign, r.flagged, r.n, r.median_distance))
    result: dict[str, object] = {
        "bundle": str(localizer.path),
        "task": "localizer",
        "guard_sha256": guard.sha256,
        "threshold": guard.threshold,
        "seed": seed,
        "rates": [r.as_dict() for r in rates],
    }
    if cost:
        from auditor.io.radiograph import read_radiograph

        images = [read_radiograph(p).pixels for p in first[:16]]
        measured = lgr.localizer_guard_cost(localizer, images)
        console.print(
            f"guard cost: {measured.guard_s * 1e6:.1f} us per image against "
            f"{measured.forward_s * 1e3:.1f} ms for the localizing forward pass "
            f"({measured.share:.3%}; 1 thread, batch of {measured.batch})"
        )
        result["cost"] = measured.as_dict()
    _write_figures(out, result)
