"""``run_scan``: the audit of one archive, from triage to reports, resumable.

Stages (each in its own module):

1. inventory and triage of every file (:mod:`auditor.archive`), and
2. vertebra boxes from a box file or the bundled localizer, matched to the candidate images
   (:mod:`auditor.scan.locate`, which hands them on in memory);
3. crops cut by the executor's worker processes, one batch of whole images per item
   (:mod:`auditor.scan.dataset`, :mod:`auditor.parallel`); without a box file they were already
   cut from the localizer's decode (``RUN_DIR/precut/``), so no image is decoded twice; with one,
   the workers also make each image's canvas for the image check from their decode
   (:mod:`auditor.scan.image_check`);
4. batched classification with class activation maps from the same pass
   (:class:`auditor.model.infer.Classifier`), heatmap overlays for positive vertebrae (or all, on
   request), and the image check's localizer guard on the batch's canvases, each batch committed
   to the run journal (:mod:`auditor.scan.journal`, :mod:`auditor.scan.classify`);
5. study flags against the original reads (:mod:`auditor.scan.flags`, via
   :mod:`auditor.scan.assemble`);
6. the reports of :data:`auditor.reports.writers.SCAN_REPORTS` (``audit.xlsx``, ``audit.html``,
   ``findings.csv``), each written atomically.

Throughput: the workers decode and crop the next batches while the main process runs the model;
on CUDA the batches are pinned and copied without blocking. Only positive vertebrae get an
overlay thumbnail, so heatmaps cost little beyond the CAM itself (computed in the same pass).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from auditor import __version__
from auditor.archive.inventory import FileRecord
from auditor.archive.triage import TriageRules
from auditor.checksums import file_sha256
from auditor.errors import UsageError
from auditor.localizer.bundle import card_sha256
from auditor.model.bundle import ModelBundle, load_bundle
from auditor.model.guard import DEFAULT_ARCHIVE_SHARE
from auditor.model.infer import Classifier, select_device
from auditor.parallel import Executor, LocalProcesses, RayTasks, Work
from auditor.records import (
    DomainCheck,
    RadiographMeta,
    SummaryValue,
    VertebraBox,
    crop_domain_verdict,
    is_positive,
)
from auditor.reports.pseudonym import Pseudonymiser, new_salt
from auditor.reports.writers import ReportOptions, write_reports
from auditor.scan.assemble import FileEntry, ScanInputs, assemble_report, shown_path, study_key
from auditor.scan.classify import ClassifyStats, ModelSpec, classify_batches
from auditor.scan.config import (
    HeatmapMode,
    Progress,
    ScanConfig,
    ScanEvent,
    ScanResult,
    default_decode_workers,
    default_workers,
)
from auditor.scan.dataset import PRECUT_DIR, ImageJob, pack_batches, precut_path
from auditor.scan.feed import wait_for_files
from auditor.scan.image_check import (
    IMAGE_CHECK,
    ImageVerdicts,
    complete,
    load_image_check,
    write_verdicts,
)
from auditor.scan.journal import (
    IMAGE_KEYS,
    JOURNAL_NAME,
    ImageOutcome,
    RunJournal,
    check_resumable,
    run_in_use,
    stored_meta,
)
from auditor.scan.locate import FoundBoxes, find_boxes
from auditor.scan.runfolder import claim_run_folder
from auditor.scan.viewer import check_viewer_url
from auditor.vocab import Engine, FileStatus

if TYPE_CHECKING:
    from auditor.localizer.infer import Localizer
    from auditor.model.stage_guard import DomainGuard

__all__ = ["HeatmapMode", "ScanConfig", "ScanEvent", "ScanResult", "run_scan"]

logger = logging.getLogger(__name__)


def _rules_fingerprint(rules: TriageRules) -> dict[str, object]:
    """The triage rules as order-independent JSON (they decide which images are scanned)."""
    out: dict[str, object] = {}
    for name, value in dataclasses.asdict(rules).items():
        if isinstance(value, (frozenset, set)):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def _validate(config: ScanConfig) -> None:
    if not config.archive.is_dir():
        raise UsageError(f"archive {config.archive} is not a directory")
    if config.operating_point is not None and config.threshold is not None:
        raise UsageError("give either --operating-point or --threshold, not both")
    if config.threshold is not None and not 0.0 <= config.threshold <= 1.0:
        raise UsageError(f"--threshold must be between 0 and 1, got {config.threshold}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {config.workers}")
    if config.ray_address is not None and config.engine is not Engine.RAY:
        raise UsageError("--ray-address goes with --engine ray")
    check_viewer_url(config.viewer_url, config.pseudonymise)
    if config.out.resolve() == config.archive.resolve():
        raise UsageError("--out is the archive folder itself; choose a run folder of its own")
    if not config.resume and (config.out / JOURNAL_NAME).exists():
        # the journal refuses this too, but only after the localizer would have run
        raise run_in_use(config.out)


def _stored_crops(config: ScanConfig, image: str) -> Path | None:
    """The crops cut from the localizer's decode of ``image``, when this scan made them."""
    if not config.precut:
        return None
    path = precut_path(config.out, image)
    return path if path.is_file() else None


@dataclass(frozen=True)
class _Model:
    """Stage 0's output: the classifier on its device and the operating point it calls at."""

    bundle: ModelBundle
    classifier: Classifier
    threshold: float
    point_name: str


@dataclass(frozen=True)
class _Classified:
    """Stages 3-4's output: every image's outcome from the journal, and how the run went."""

    outcomes: dict[str, ImageOutcome]
    salt: str
    stats: ClassifyStats
    workers: int
    precut_images: int
    # a streamed archive's final row of every file it was asked for (auditor.scan.feed)
    fed: Mapping[Path, FileRecord] = dataclasses.field(default_factory=dict)
    # with a box file, the image check's verdicts (None: it did not run)
    image_check: ImageVerdicts | None = None


def _load_model(config: ScanConfig, emit: Progress) -> _Model:
    bundle = load_bundle(config.model)
    classifier = Classifier(
        bundle, select_device(config.device), config.precision, config.heatmap_method
    )
    if config.threshold is not None:
        threshold, op_name = float(config.threshold), "custom threshold"
    else:
        point = bundle.card.operating_point(config.operating_point)
        threshold, op_name = float(point.threshold), point.name
    emit(ScanEvent("info", f"Model: {bundle.card.headline()}"))
    emit(ScanEvent("info", f"Running on {classifier.describe()}; positive at P >= {threshold:.3f}"))
    guard = bundle.card.guard
    if guard is None:
        if config.strict_domain:
            raise UsageError(
                f"--strict-domain: the model bundle {bundle.path} records no domain guard, so "
                "whether the images are like its training data cannot be checked"
            )
        emit(ScanEvent("info", "Domain guard: off (the model bundle records none)"))
    else:
        emit(ScanEvent("info", f"Domain guard: {guard.describe()}"))
    return _Model(bundle, classifier, threshold, op_name)


def crops_by_study(
    outcomes: Mapping[str, ImageOutcome],
    metas: Mapping[str, RadiographMeta | None],
    boxes: Mapping[str, Sequence[VertebraBox]],
    refused: Set[str],
    threshold: float | None,
) -> dict[str, tuple[int, int]]:
    """Per study (as the reports group images: :func:`auditor.scan.assemble.study_key`), its
    classified crops with a domain verdict and those out of distribution: a crop beyond the
    guard's ``threshold``, or any crop of an image the image check ``refused``."""
    counts: dict[str, tuple[int, int]] = {}
    for image, outcome in outcomes.items():
        key = study_key(image, metas.get(image), boxes.get(image, ()))
        crops, out = counts.get(key, (0, 0))
        for v in outcome.vertebrae:
            verdict = crop_domain_verdict(v.probability, v.distance, image in refused, threshold)
            if verdict is None:
                continue  # not classified, or no crop guard and no image verdict
            crops += 1
            out += verdict
        counts[key] = (crops, out)
    return counts


def domain_check(
    guard: DomainGuard | None,
    counts: Iterable[tuple[int, int]],
    images: int = 0,
    images_out: int = 0,
) -> DomainCheck:
    """The archive rules' verdict on an archive: per study its classified crops with a domain
    verdict and those out of distribution (:func:`crops_by_study`), and the images the
    localizer's guard measured and refused, judged with ``guard``'s ``archive_share`` and
    ``count_rule`` (nothing is marked without a guard). A scan calls it once at its end;
    ``tlaudit guard-rates --runs`` on archives drawn from scanned studies
    (:mod:`auditor.scan.archive_rates`)."""
    pairs = list(counts)
    crops = [c for c, _ in pairs]
    out = [k for _, k in pairs]
    return DomainCheck(
        guarded=guard is not None,
        threshold=guard.threshold if guard is not None else None,
        archive_share=guard.archive_share if guard is not None else DEFAULT_ARCHIVE_SHARE,
        crops=sum(crops),
        crops_out=sum(out),
        images=images,
        images_out=images_out,
        method=guard.describe() if guard is not None else "",
        count=guard.count_rule.test(crops, out) if guard is not None else None,
    )


def _domain(
    model: _Model,
    outcomes: Mapping[str, ImageOutcome],
    boxes: FoundBoxes,
    check: ImageVerdicts | None,
) -> DomainCheck:
    """What the domain guards said about the whole run: the classifier's per crop, the
    localizer's per image (when it ran, or with a box file the image check), every crop of an
    image the image check refused counted out; and the guard's count rule on the per-study
    counts (studies as the reports group images: :func:`auditor.scan.assemble.study_key`)."""
    guard = model.bundle.card.guard
    threshold = guard.threshold if guard is not None else None
    counts = crops_by_study(
        outcomes,
        {f.relative: f.meta for f in boxes.files},
        boxes.resolved.by_image,
        check.refused if check is not None else frozenset(),
        threshold,
    )
    measured = [o for o in boxes.localizer_outcomes if o.distance is not None]
    images, images_out = len(measured), sum(o.out_of_distribution for o in measured)
    if check is not None:  # a box file's image check
        images, images_out = len(check.distances), len(check.refused)
    return domain_check(guard, counts.values(), images, images_out)


def _fingerprint(config: ScanConfig, model: _Model) -> dict[str, Any]:
    """Everything that changes a scan's results: a ``--resume`` must match it (the journal
    stores it), and it is known before any work.

    The boxes are the user's box file (its SHA-256), or without one the localizer bundle (its
    card's SHA-256, :func:`auditor.localizer.bundle.card_sha256`): the localizer's boxes are a
    function of the bundle and the images, and the box file it writes is a by-product that a
    resumed scan may complete (a streamed archive's images not retrieved before).

    Raises
    ------
    BundleError
        Without a box file, when the localizer bundle has no card.
    """
    classifier = model.classifier
    boxes = config.boxes
    used: dict[str, str | None]
    if boxes is None:
        used = {"boxes_sha256": None, "localizer_sha256": card_sha256(config.localizer)}
    else:  # the keys journals have always had, so a run journaled before still resumes
        # a box file that is not there has no hash; reading it says so
        used = {"boxes_sha256": file_sha256(boxes) if boxes.is_file() else None}
    return {
        "archive": str(config.archive.resolve()),
        **used,
        "box_format": str(config.box_format),
        "model_sha256": model.bundle.sha256,
        "threshold": model.threshold,
        "guard_sha256": guard.sha256 if (guard := model.bundle.card.guard) is not None else None,
        "heatmaps": config.heatmaps.value,
        "heatmap_method": classifier.heatmap,
        "batch_size": config.batch_size,
        "device": classifier.device.type,
        "precision": classifier.precision,
        "triage": _rules_fingerprint(config.triage),
        "pseudonymise": config.pseudonymise,
        "tlaudit": __version__,
    }


def _classify(
    config: ScanConfig,
    model: _Model,
    boxes: FoundBoxes,
    timings: dict[str, float],
    emit: Progress,
    salt: str,
    fingerprint: Mapping[str, Any],
    checker: Localizer | None = None,
) -> _Classified:
    """Stages 3 and 4: crops and classification of every image the journal does not hold yet,
    each batch committed to the journal of the run's ``fingerprint`` (with the run's pseudonym
    ``salt``, unless the user gave it), with the image check by ``checker``'s guard
    (:mod:`auditor.scan.image_check`) when given; returns every image's outcome and the image
    check's verdicts."""
    classifier = model.classifier
    paths = {f.relative: f.path for f in boxes.files}
    # the journal and the thumbnails name each image by its key: a keyed reference, not its
    # path, when pseudonymising (Pseudonymiser.key)
    anon = Pseudonymiser(salt, enabled=config.pseudonymise)
    relpath = {anon.key(image): image for image in boxes.resolved.by_image}
    jobs = [
        ImageJob(anon.key(image), paths[image], image_boxes, _stored_crops(config, image))
        for image, image_boxes in boxes.resolved.by_image.items()
    ]
    workers = default_workers() if config.workers is None else config.workers
    feed = config.feed
    on_record = None
    if feed is not None:
        by_key = {job.image: job.path for job in jobs}

        def on_record(keys: Sequence[str]) -> None:  # each batch's files go once committed
            feed.journaled([by_key[key] for key in keys if key in by_key])

    with RunJournal(config.out, fingerprint, config.resume, on_record) as journal:
        if config.pseudonym_salt is None and journal.get_meta("salt") is None:
            journal.set_meta("salt", salt)
        journal.set_meta(IMAGE_KEYS, "ref" if config.pseudonymise else "path")
        finished = journal.finished_images()
        batches = [
            [i for i in batch if jobs[i].image not in finished]
            for batch in pack_batches(jobs, config.batch_size)
        ]
        batches = [batch for batch in batches if batch]
        todo = sum(len(jobs[i].boxes) for batch in batches for i in batch)
        if finished:
            emit(ScanEvent("info", f"Resuming: {len(finished)} images already done"))
        t0 = time.perf_counter()
        emit(ScanEvent("start", total=todo))
        executor = _executor(config, workers, pin_memory=classifier.device.type == "cuda")
        fed: Mapping[Path, FileRecord] = {}
        if feed is not None:
            files = [tuple(jobs[i].path for i in batch) for batch in batches]
            feed.start(files)
            executor = _Arriving(executor, tuple(files))
        with _torch_threads(config.threads):
            stats = classify_batches(
                jobs,
                batches,
                classifier,
                config.heatmaps,
                model.threshold,
                executor,
                journal,
                emit,
                on_workers=_on_workers(config, model),
                image_check=checker,
            )
        if feed is not None:
            fed = feed.finish()
            # an image whose file never arrived is its feed's row, not a result: forgotten, so
            # that --resume classifies it
            missing = {p for p, row in fed.items() if row.status is not FileStatus.CANDIDATE}
            journal.forget(job.image for job in jobs if job.path in missing)
        timings["classification_s"] = time.perf_counter() - t0
        journaled = journal.outcomes()
        verdicts = None
        if checker is not None:
            t_check = time.perf_counter()
            verdicts = _image_verdicts(
                config, checker, journal, journaled, relpath, boxes, anon, stats.checked, emit
            )
            # with the loading of its localizer (_run) and its network beside classification
            timings["image_check_s"] = (
                timings.get("image_check_s", 0.0) + stats.check_s + time.perf_counter() - t_check
            )
        outcomes = {
            relpath.get(key, key): dataclasses.replace(outcome, image=relpath.get(key, key))
            for key, outcome in journaled.items()
        }
    # Every image is in the journal now; the crops cut during localization are spent.
    shutil.rmtree(config.out / PRECUT_DIR, ignore_errors=True)
    precut = sum(job.precut is not None for job in jobs)
    return _Classified(outcomes, salt, stats, workers, precut, fed, verdicts)


def _image_verdicts(
    config: ScanConfig,
    checker: Localizer,
    journal: RunJournal,
    journaled: Mapping[str, ImageOutcome],
    relpath: Mapping[str, str],
    boxes: FoundBoxes,
    anon: Pseudonymiser,
    measured: int,
    emit: Progress,
) -> ImageVerdicts:
    """The image check's verdicts of every image in the journal (keyed by journal key; mapped
    back to archive paths by ``relpath``), the ones it lacks measured now
    (:func:`auditor.scan.image_check.complete`), written to ``RUN_DIR/image_check.csv``;
    ``measured`` images were measured beside this session's classification."""
    assert checker.guard is not None  # load_image_check returns a guarded localizer only
    paths = {f.relative: f.path for f in boxes.files}
    classified = {
        key: paths[relpath.get(key, key)]
        for key, outcome in journaled.items()
        if outcome.status == "classified" and relpath.get(key, key) in paths
    }
    workers = default_decode_workers() if config.workers is None else config.workers
    by_key, rechecked, unchecked = complete(
        checker, journal, classified, workers, streamed=config.feed is not None
    )
    distances = {relpath.get(key, key): d for key, d in by_key.items()}
    images = list(boxes.resolved.by_image)
    metas = {f.relative: f.meta for f in boxes.files}
    shown = {image: shown_path(anon, image, metas.get(image)) for image in images}
    out = config.out / IMAGE_CHECK
    refused = write_verdicts(out, images, distances, checker.guard.threshold, shown)
    counted = {image: d for image, d in distances.items() if image in shown}
    emit(
        ScanEvent(
            "info",
            f"Image check (the localizer's domain guard): {len(refused)} of {len(counted)} "
            "images out of distribution"
            + (f", {rechecked} decoded again for want of a verdict" if rechecked else "")
            + (f", {unchecked} not checked" if unchecked else "")
            + f"; verdicts in {out}",
        )
    )
    return ImageVerdicts(out, counted, refused, measured, rechecked, unchecked)


_T = TypeVar("_T")


@dataclass(frozen=True)
class _ArrivingWork:
    """``work`` whose item ``k`` first waits for the files of batch ``k`` (in the worker process
    that computes it; picklable)."""

    work: Work[Any]
    files: tuple[tuple[Path, ...], ...]

    def __getitem__(self, index: int) -> Any:
        wait_for_files(self.files[index])
        return self.work[index]

    def lost(self, index: int, reason: str) -> Any:
        return self.work.lost(index, reason)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Arriving:
    """An executor whose batches wait for their files to arrive (:mod:`auditor.scan.feed`)."""

    executor: Executor
    files: tuple[tuple[Path, ...], ...]

    def map_in_order(self, work: Work[_T], size: int) -> Iterator[_T]:
        return self.executor.map_in_order(_ArrivingWork(work, self.files), size)


def _on_workers(config: ScanConfig, model: _Model) -> ModelSpec | None:
    """On Ray, and locally with ``--model-in-workers``, the workers that cut the crops classify
    them too, one model each; otherwise the model runs here, on the threads the crop workers
    leave."""
    if config.engine is not Engine.RAY and not config.model_in_workers:
        return None
    what = "--engine ray" if config.engine is Engine.RAY else "--model-in-workers"
    classifier = model.classifier
    if classifier.device.type != "cpu":
        raise UsageError(f"{what} runs the model on the workers' CPUs: use --device cpu")
    if config.engine is Engine.LOCAL and config.workers == 0:
        raise UsageError("--model-in-workers needs worker processes: --workers 1 or more")
    return ModelSpec(
        config.model, model.bundle.sha256, str(classifier.precision), classifier.heatmap
    )


def _executor(config: ScanConfig, workers: int, pin_memory: bool) -> Executor:
    """Where the crops are decoded and cut: ``workers`` processes here, or Ray tasks."""
    if config.engine is Engine.RAY:
        return RayTasks(config.ray_address)
    return LocalProcesses(workers, pin_memory=pin_memory)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the classifier on ``threads`` torch threads (None: as they are); the caller's count
    is restored after."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _summary(
    config: ScanConfig,
    model: _Model,
    boxes: FoundBoxes,
    done: _Classified,
    counts: tuple[int, int],
    timings: dict[str, float],
    domain: DomainCheck,
) -> list[tuple[str, SummaryValue]]:
    """The run's parameters and counts, as the reports' summary tables show them."""
    card, classifier, threshold = model.bundle.card, model.classifier, model.threshold
    n_vertebrae, n_positive = counts
    box_file, resolved, reads_file = boxes.box_file, boxes.resolved, boxes.reads_file
    outcomes = done.outcomes
    summary: list[tuple[str, SummaryValue]] = [
        ("tlaudit version", __version__),
        ("Archive", config.source or str(config.archive)),
        (
            "Box file",
            str(config.boxes) if config.boxes else f"from the localizer: {box_file.path}",
        ),
        ("Reads file", str(config.reads) if config.reads else "none"),
        ("Model", card.name),
        (
            "Model architecture",
            f"{card.architecture}, {card.input_size} px crops, "
            f"{card.heatmap_grid} x {card.heatmap_grid} heatmap grid",
        ),
        ("Model SHA-256", model.bundle.sha256),
        ("Model validation", card.validation_status()),
        ("Operating point", f"{model.point_name} (P >= {threshold:.4f})"),
        *domain.summary(),
        ("Device", classifier.describe()),
        ("Batch size", config.batch_size),
        (
            "Loader workers",
            f"Ray tasks ({config.ray_address or 'this machine'})"
            if config.engine is Engine.RAY
            else done.workers,
        ),
        ("Heatmaps", f"{config.heatmaps.value} ({classifier.heatmap})"),
        ("Pseudonymised", "yes" if config.pseudonymise else "no"),
        ("Files found", len(boxes.files)),
        ("Candidate images", len(boxes.candidates)),
        ("Images with boxes", len(resolved.by_image)),
        ("Images classified", sum(o.status == "classified" for o in outcomes.values())),
        ("Images that failed", sum(o.status != "classified" for o in outcomes.values())),
        ("Vertebrae classified", n_vertebrae),
        ("Vertebrae positive", n_positive),
        ("Box rows rejected", len(box_file.errors) + len(resolved.errors)),
        ("Reads rows rejected", len(reads_file.errors) if reads_file else 0),
        ("Inventory time (s)", round(timings["inventory_s"], 2)),
        ("Classification time this session (s)", round(timings["classification_s"], 2)),
    ]
    if config.boxes is not None:
        summary.append(("Image check", _image_check_summary(done.image_check, timings)))
    if config.boxes is None:
        summary += [
            ("Images without usable localizer boxes", len(boxes.localizer_errors)),
            ("Localizer time (s)", round(timings["localizer_s"], 2)),
        ]
    return summary


def _image_check_summary(check: ImageVerdicts | None, timings: Mapping[str, float]) -> str:
    """The image check's row of the summary: whether it ran, and what it refused."""
    if check is None:
        return "off (--no-image-check, or a localizer bundle without a guard)"
    return (
        f"ran: the localizer's domain guard refused {len(check.refused)} of "
        f"{len(check.distances)} images (every crop of a refused image is out of distribution); "
        f"{check.measured} measured beside this session's classification"
        + (f", {check.rechecked} decoded again for it" if check.rechecked else "")
        + (f", {check.unchecked} journaled without it and not checked" if check.unchecked else "")
        + f"; {timings.get('image_check_s', 0.0):.1f} s of this process's time"
    )


def run_scan(config: ScanConfig, progress: Progress | None = None) -> ScanResult:
    """Audit an archive: triage, crops, classification with heatmaps, flags and reports.

    The stages run in the order of this module's docstring, each handing the next a record: the
    model (:func:`_load_model`), the boxes (:func:`auditor.scan.locate.find_boxes`), every
    image's outcome (:func:`_classify`), then the report, written by each writer of
    :data:`~auditor.reports.writers.SCAN_REPORTS`.

    Parameters
    ----------
    config
        What to scan and how.
    progress
        Optional callback receiving :class:`ScanEvent` messages and batch progress.

    Returns
    -------
    ScanResult
        Paths of the reports, counts and timings.

    Raises
    ------
    UsageError
        For contradictory or impossible options, no box file, a run directory that already holds
        another run (without ``resume``) or a resume whose inputs differ.
    InputFileError
        When the box or reads file cannot be read as a whole, or no row of the box file gives a
        usable box on a candidate image.
    NoCandidatesError
        When triage keeps no file of the archive (its ``summary`` has the counts by reason).
    BundleError
        When the model bundle, or without a box file the localizer bundle, is missing or not ours.
    """
    emit = progress or (lambda event: None)
    _validate(config)
    with claim_run_folder(config.out):
        return _run(config, emit)


def _run(config: ScanConfig, emit: Progress) -> ScanResult:
    """:func:`run_scan` in a run folder it holds."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    model = _load_model(config, emit)
    fingerprint = _fingerprint(config, model)
    if config.resume:  # refused before the localizer runs
        check_resumable(config.out, fingerprint)
    # the salt is known before the localizer stage, whose files name images as the reports do
    salt = (
        config.pseudonym_salt
        or (stored_meta(config.out, "salt") if config.resume else None)
        or new_salt()
    )
    anon = Pseudonymiser(salt, enabled=config.pseudonymise)
    boxes = find_boxes(config, model.bundle.card, model.classifier.device, timings, emit, anon)
    checker = None
    if config.boxes is not None:  # the localizer's guard checks each image beside classification
        t_check = time.perf_counter()
        checker = load_image_check(config, model.classifier.device, emit)
        if checker is not None:
            timings["image_check_s"] = time.perf_counter() - t_check
    if config.extra_records:  # a PACS scan: the instances not retrieved are accounting rows too
        extra = tuple(FileEntry.of(record) for record in config.extra_records)
        boxes = dataclasses.replace(boxes, files=boxes.files + extra)
    done = _classify(config, model, boxes, timings, emit, salt, fingerprint, checker)
    if done.fed:  # a streamed archive: its rows as they ended (retrieved, or not with why)
        by_path = {path: FileEntry.of(record) for path, record in done.fed.items()}
        files = tuple(by_path.get(f.path, f) for f in boxes.files)
        boxes = dataclasses.replace(boxes, files=files)
    stats = done.stats
    timings.update(
        classified_this_session=float(stats.vertebrae),
        loader_wait_s=stats.wait_s,
        model_s=stats.model_s,
        heatmap_maps_s=stats.maps_s,
        heatmap_thumbnails_s=stats.heatmap_s,
        journal_s=stats.journal_s,
        heatmaps_drawn=float(stats.heatmaps),
        precut_images=float(done.precut_images),
    )

    t0 = time.perf_counter()
    threshold, outcomes = model.threshold, done.outcomes
    inputs = ScanInputs(
        run_dir=config.out,
        files=boxes.files,
        boxes=boxes.resolved.by_image,
        box_errors=boxes.localizer_errors + boxes.box_file.errors + boxes.resolved.errors,
        reads=boxes.reads_file.rows if boxes.reads_file else None,
        read_errors=boxes.reads_file.errors if boxes.reads_file else (),
        threshold=threshold,
        pseudonymise=Pseudonymiser(done.salt, enabled=config.pseudonymise),
        guard_threshold=model.bundle.card.guard.threshold if model.bundle.card.guard else None,
        refused_images=done.image_check.refused if done.image_check else frozenset(),
        viewer_url=config.viewer_url,
    )
    vertebrae = [v for o in outcomes.values() for v in o.vertebrae if v.probability is not None]
    n_positive = sum(is_positive(v.probability, threshold) for v in vertebrae)
    domain = _domain(model, outcomes, boxes, done.image_check)
    summary = _summary(config, model, boxes, done, (len(vertebrae), n_positive), timings, domain)
    report = assemble_report(inputs, outcomes, summary, domain=domain)
    options = ReportOptions(
        config.out,
        config.embed_limit,
        config.table_limit,
        training_data=model.bundle.card.training_data,
        validation=model.bundle.card.validation_status(),
    )
    reports = write_reports(report, options)
    timings["reports_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    return ScanResult(
        run_dir=config.out,
        reports=reports,
        headline=model.bundle.card.headline(),
        device=model.classifier.describe(),
        threshold=threshold,
        n_files=len(boxes.files),
        n_candidates=len(boxes.candidates),
        n_images=len(outcomes),
        n_vertebrae=len(vertebrae),
        n_positive=n_positive,
        n_flagged=len(report.studies),
        status_counts=dict(report.status_counts),
        n_errors=len(report.errors),
        timings=timings,
        domain=domain,
        reads=report.reads_check,
    )
