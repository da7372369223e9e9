"""``run_scan``: the audit of one archive, from triage to reports, resumable.

Stages (each in its own module):

1. inventory and triage of every file (:mod:`auditor.archive`);
2. vertebra boxes from a box file, or, without one, from the bundled vertebra localizer
   (:mod:`auditor.localizer`, written to ``RUN_DIR/localizer_boxes.csv`` for review and reused by
   ``--resume``), validated row by row and matched to the candidate images (:mod:`auditor.boxes`);
   a candidate on which the localizer finds nothing usable is an error row with the reason;
3. crops cut in DataLoader worker processes, one item per image (:mod:`auditor.scan.dataset`);
   without a box file they were already cut from the localizer's decode (``RUN_DIR/precut/``),
   so no image is decoded twice;
4. batched classification with class activation maps from the same pass
   (:class:`auditor.model.infer.Classifier`), heatmap overlays for positive vertebrae (or all, on
   request), each batch committed to the run journal (:mod:`auditor.scan.journal`);
5. study flags against the original reads (:mod:`auditor.scan.flags`);
6. the reports of :data:`auditor.reports.writers.SCAN_REPORTS` (``audit.xlsx``, ``audit.html``,
   ``findings.csv``), each written atomically.

Throughput: the DataLoader's workers decode and crop the next batches while the main process runs
the model; on CUDA the batches are pinned and copied without blocking. Only positive vertebrae get
an overlay thumbnail, so heatmaps cost little beyond the CAM itself (computed in the same pass).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from auditor import __version__
from auditor.archive.inventory import FileRecord, inventory
from auditor.archive.triage import TriageRules
from auditor.boxes import BoxFile, degenerate_reason, read_box_file, resolve_boxes
from auditor.checksums import file_sha256
from auditor.errors import UsageError
from auditor.model.bundle import ModelCard, load_bundle
from auditor.model.infer import Classifier, select_device
from auditor.parallel import LocalProcesses
from auditor.records import (
    LocalizerOutcome,
    Radiograph,
    RowError,
    SummaryValue,
    VertebraBox,
    is_positive,
)
from auditor.reports.pseudonym import Pseudonymiser, new_salt
from auditor.reports.writers import ReportOptions, write_reports
from auditor.scan.assemble import FileEntry, ScanInputs, assemble_report
from auditor.scan.classify import classify_batches
from auditor.scan.config import (
    HeatmapMode,
    Progress,
    ScanConfig,
    ScanEvent,
    ScanResult,
    default_decode_workers,
    default_workers,
)
from auditor.scan.dataset import PRECUT_DIR, ImageJob, pack_batches, precut_path, write_precut
from auditor.scan.journal import JOURNAL_NAME, RunJournal, run_in_use
from auditor.scan.reads import ReadsFile, read_reads_file

__all__ = ["HeatmapMode", "ScanConfig", "ScanEvent", "ScanResult", "run_scan"]

logger = logging.getLogger(__name__)

LOCALIZER_BOXES = "localizer_boxes.csv"
"""Box file the localizer writes into RUN_DIR when the scan has no ``--boxes``."""


def _file_entry(record: FileRecord) -> FileEntry:
    """One file's accounting row as the reports carry it (the inventory's triage, not a copy)."""
    return FileEntry(
        relative=record.relpath,
        path=record.path,
        size=record.size,
        status=record.status.value,
        reason=record.reason.value + (f": {record.detail}" if record.detail else ""),
        meta=record.meta,
    )


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
    if not config.resume and (config.out / JOURNAL_NAME).exists():
        # the journal refuses this too, but only after the localizer would have run
        raise run_in_use(config.out)


def _localize(
    config: ScanConfig,
    card: ModelCard,
    records: list[FileRecord],
    device: torch.device,
    emit: Progress,
) -> tuple[BoxFile, tuple[RowError, ...]]:
    """Find vertebra boxes with the localizer; return them (as a box file states them) and one
    error per image on which nothing usable was found (or that could not be read).

    The boxes are handed on in memory. The box file is written into RUN_DIR as a by-product, so a
    person can review or correct it (and pass it back with ``--boxes``), and so that a resumed
    scan reads it back instead of localizing again. The classifier's crops
    are cut from the localizer's decode of each image (``RUN_DIR/precut/``), so the loader does
    not decode it a second time. The scan's loader workers decode the next images meanwhile.
    """
    from auditor.localizer import localize_archive  # torch model; only needed without --boxes

    def precut(image: str, radiograph: Radiograph, found: list[VertebraBox]) -> None:
        boxes = [(box.level.value, box.xyxy) for box in found]
        try:
            write_precut(precut_path(config.out, image), radiograph.pixels, boxes, card)
        except (OSError, ValueError) as err:  # e.g. a full disk: the loader decodes it instead
            logger.warning("cannot store an image's crops (%s); it will be decoded again", err)

    out = config.out / LOCALIZER_BOXES
    outcomes = out.with_name(out.stem + ".images.csv")
    if config.resume and out.is_file() and outcomes.is_file():
        with outcomes.open(newline="", encoding="utf-8") as handle:
            stored = [
                LocalizerOutcome(row["image"], row["status"], row["reason"])
                for row in csv.DictReader(handle)
            ]
        return read_box_file(out), _localizer_errors(stored)
    emit(ScanEvent("info", "No box file given: finding vertebrae with the localizer"))
    done = localize_archive(
        config.archive,
        out,
        bundle=config.localizer,
        rules=config.triage,
        on_located=precut if config.precut else None,
        records=records,
        workers=default_decode_workers() if config.workers is None else config.workers,
        device=device,
    )
    emit(
        ScanEvent(
            "info",
            f"Localizer: {done.boxes} boxes on {done.localized} of {done.candidates} "
            f"candidate images; nothing usable on {done.nothing_found}, "
            f"{done.unreadable} unreadable; boxes in {out}",
        )
    )
    kept = [box for box in done.found if not degenerate_reason(box.xyxy)]
    rejected = tuple(
        RowError(box.row, degenerate_reason(box.xyxy), box.image, box.level.value)
        for box in done.found
        if degenerate_reason(box.xyxy)
    )
    return BoxFile(out, tuple(kept), rejected), _localizer_errors(done.outcomes)


def _localizer_errors(outcomes: Iterable[LocalizerOutcome]) -> tuple[RowError, ...]:
    """One error per image the localizer found nothing usable on or could not read."""
    return tuple(
        RowError(0, o.reason or o.status.replace("_", " "), o.image, source="localizer")
        for o in outcomes
        if o.status != "localized"
    )


def _stored_crops(config: ScanConfig, image: str) -> Path | None:
    """The crops cut from the localizer's decode of ``image``, when this scan made them."""
    if config.boxes is not None or not config.precut:
        return None
    path = precut_path(config.out, image)
    return path if path.is_file() else None


def run_scan(config: ScanConfig, progress: Progress | None = None) -> ScanResult:
    """Audit an archive: triage, crops, classification with heatmaps, flags and reports.

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
        When the box or reads file cannot be read as a whole.
    BundleError
        When the model bundle is missing or not ours.
    """
    emit = progress or (lambda event: None)
    _validate(config)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    bundle = load_bundle(config.model)
    card = bundle.card
    device = select_device(config.device)
    classifier = Classifier(bundle, device, config.precision, config.heatmap_method)
    if config.threshold is not None:
        threshold, op_name = float(config.threshold), "custom threshold"
    else:
        point = card.operating_point(config.operating_point)
        threshold, op_name = float(point.threshold), point.name
    emit(ScanEvent("info", f"Model: {card.headline()}"))
    emit(ScanEvent("info", f"Running on {classifier.describe()}; positive at P >= {threshold:.3f}"))

    t0 = time.perf_counter()
    records = list(inventory(config.archive, config.triage, verify_pixels=config.verify_pixels))
    files = [_file_entry(record) for record in records]
    candidates = {f.relative: f.meta for f in files if f.status == "candidate" and f.meta}
    localizer_errors: tuple[RowError, ...] = ()
    if config.boxes is None:
        t_loc = time.perf_counter()
        box_file, localizer_errors = _localize(config, card, records, device, emit)
        timings["localizer_s"] = time.perf_counter() - t_loc
    else:
        box_file = read_box_file(config.boxes)
    box_path = box_file.path
    resolved = resolve_boxes(box_file.boxes, candidates)
    reads_file: ReadsFile | None = read_reads_file(config.reads) if config.reads else None
    timings["inventory_s"] = time.perf_counter() - t0 - timings.get("localizer_s", 0.0)
    emit(
        ScanEvent(
            "info",
            f"{len(files)} files, {len(candidates)} candidate images, "
            f"{len(resolved.by_image)} with boxes ({resolved.n_boxes} vertebrae); "
            f"{len(box_file.errors) + len(resolved.errors)} box rows rejected"
            + (f", {len(reads_file.errors)} reads rows rejected" if reads_file else ""),
        )
    )

    if box_file.boxes and not resolved.by_image:
        emit(
            ScanEvent(
                "info",
                f"warning: none of the {len(box_file.boxes)} box rows matched a candidate image; "
                "box paths must be relative to ARCHIVE (see the Errors table for each row)",
            )
        )

    fingerprint = {
        "archive": str(config.archive.resolve()),
        "boxes_sha256": file_sha256(box_path),
        "model_sha256": bundle.sha256,
        "threshold": threshold,
        "heatmaps": config.heatmaps.value,
        "heatmap_method": classifier.heatmap,
        "batch_size": config.batch_size,
        "device": device.type,
        "precision": classifier.precision,
        "triage": _rules_fingerprint(config.triage),
        "tlaudit": __version__,
    }
    paths = {f.relative: f.path for f in files}
    jobs = [
        ImageJob(image, paths[image], boxes, _stored_crops(config, image))
        for image, boxes in resolved.by_image.items()
    ]
    workers = default_workers() if config.workers is None else config.workers
    with RunJournal(config.out, fingerprint, config.resume) as journal:
        salt = config.pseudonym_salt or journal.get_meta("salt")
        if salt is None:
            salt = new_salt()
            journal.set_meta("salt", salt)
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
        executor = LocalProcesses(workers, pin_memory=device.type == "cuda")
        stats = classify_batches(
            jobs, batches, classifier, config.heatmaps, threshold, executor, journal, emit
        )
        timings["classification_s"] = time.perf_counter() - t0
        timings["classified_this_session"] = float(stats.vertebrae)
        timings["loader_wait_s"] = stats.wait_s
        timings["model_s"] = stats.model_s
        timings["heatmap_maps_s"] = stats.maps_s
        timings["heatmap_thumbnails_s"] = stats.heatmap_s
        timings["journal_s"] = stats.journal_s
        timings["heatmaps_drawn"] = float(stats.heatmaps)
        timings["precut_images"] = float(sum(job.precut is not None for job in jobs))

        t0 = time.perf_counter()
        outcomes = journal.outcomes()
    # Every image is in the journal now; the crops cut during localization are spent.
    shutil.rmtree(config.out / PRECUT_DIR, ignore_errors=True)
    inputs = ScanInputs(
        run_dir=config.out,
        files=tuple(files),
        boxes=resolved.by_image,
        box_errors=localizer_errors + box_file.errors + resolved.errors,
        reads=reads_file.reads if reads_file else None,
        read_errors=reads_file.errors if reads_file else (),
        threshold=threshold,
        pseudonymise=Pseudonymiser(salt, enabled=config.pseudonymise),
    )
    n_vertebrae = sum(
        1 for o in outcomes.values() for v in o.vertebrae if v.probability is not None
    )
    n_positive = sum(
        1 for o in outcomes.values() for v in o.vertebrae if is_positive(v.probability, threshold)
    )
    summary: list[tuple[str, SummaryValue]] = [
        ("tlaudit version", __version__),
        ("Archive", str(config.archive)),
        ("Box file", str(config.boxes) if config.boxes else f"from the localizer: {box_path}"),
        ("Reads file", str(config.reads) if config.reads else "none"),
        ("Model", card.name),
        (
            "Model architecture",
            f"{card.architecture}, {card.input_size} px crops, "
            f"{card.heatmap_grid} x {card.heatmap_grid} heatmap grid",
        ),
        ("Model SHA-256", bundle.sha256),
        ("Operating point", f"{op_name} (P >= {threshold:.4f})"),
        ("Device", classifier.describe()),
        ("Batch size", config.batch_size),
        ("Loader workers", workers),
        ("Heatmaps", f"{config.heatmaps.value} ({classifier.heatmap})"),
        ("Pseudonymised", "yes" if config.pseudonymise else "no"),
        ("Files found", len(files)),
        ("Candidate images", len(candidates)),
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
    if config.boxes is None:
        summary += [
            ("Images without usable localizer boxes", len(localizer_errors)),
            ("Localizer time (s)", round(timings["localizer_s"], 2)),
        ]
    report = assemble_report(inputs, outcomes, summary)
    reports = write_reports(
        report, ReportOptions(config.out, config.embed_limit, config.table_limit)
    )
    timings["reports_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    counts = dict(report.status_counts)
    return ScanResult(
        run_dir=config.out,
        reports=reports,
        headline=card.headline(),
        device=classifier.describe(),
        threshold=threshold,
        n_files=len(files),
        n_candidates=len(candidates),
        n_images=len(outcomes),
        n_vertebrae=n_vertebrae,
        n_positive=n_positive,
        n_flagged=len(report.studies),
        status_counts=counts,
        n_errors=len(report.errors),
        timings=timings,
    )
