"""``run_scan``: the audit of one archive, from triage to reports, resumable.

Stages (each in its own module):

1. inventory and triage of every file (:mod:`auditor.archive`);
2. vertebra boxes from a box file, validated row by row and matched to the candidate images
   (:mod:`auditor.boxes`);
3. crops cut in DataLoader worker processes, one item per image (:mod:`auditor.scan.dataset`);
4. batched classification with class activation maps from the same pass
   (:class:`auditor.model.infer.Classifier`), heatmap overlays for positive vertebrae (or all, on
   request), each batch committed to the run journal (:mod:`auditor.scan.journal`);
5. study flags against the original reads (:mod:`auditor.scan.flags`);
6. ``findings.csv``, ``audit.xlsx`` and ``audit.html``, written atomically
   (:mod:`auditor.reports`).

Throughput: the DataLoader's workers decode and crop the next batches while the main process runs
the model; on CUDA the batches are pinned and copied without blocking. Only positive vertebrae get
an overlay thumbnail, so heatmaps cost little beyond the CAM itself (computed in the same pass).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from auditor import __version__
from auditor.archive.inventory import inventory
from auditor.archive.triage import TriageRules
from auditor.boxes import read_box_file, resolve_boxes
from auditor.errors import UsageError
from auditor.model.bundle import load_bundle
from auditor.model.infer import Classifier, Prediction, select_device
from auditor.reports.excel import write_excel
from auditor.reports.findings import write_findings_csv
from auditor.reports.html import DEFAULT_EMBED_LIMIT, DEFAULT_TABLE_LIMIT, write_html
from auditor.reports.pseudonym import Pseudonymiser, new_salt
from auditor.reports.thumbnails import HEATMAP_DIR, heatmap_overlay, save_jpeg, thumbnail_name
from auditor.scan.assemble import FileEntry, ScanInputs, assemble_report
from auditor.scan.dataset import (
    CropBatch,
    ImageJob,
    VertebraCropDataset,
    collate,
    pack_batches,
)
from auditor.scan.flags import StudyStatus
from auditor.scan.journal import ImageOutcome, RunJournal, VertebraOutcome
from auditor.scan.reads import ReadsFile, read_reads_file
from auditor.scan.results import SummaryValue

logger = logging.getLogger(__name__)

REPORT_NAMES = {"xlsx": "audit.xlsx", "html": "audit.html", "csv": "findings.csv"}
NO_BOXES_MESSAGE = (
    "a box file is needed: pass --boxes FILE (CSV or COCO JSON with one box per vertebra, see "
    "the README); scanning without boxes needs the bundled vertebra localizer, which this "
    "installation does not have yet"
)


class HeatmapMode(str, Enum):
    """Which vertebrae get a heatmap overlay thumbnail."""

    POSITIVE = "positive"
    ALL = "all"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ScanConfig:
    """Everything ``tlaudit scan`` was asked to do.

    ``operating_point`` and ``threshold`` exclude each other; with neither, the model card's
    default operating point is used. ``workers`` None picks a count for this machine.
    """

    archive: Path
    out: Path
    boxes: Path | None = None
    reads: Path | None = None
    model: Path | None = None
    operating_point: str | None = None
    threshold: float | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    resume: bool = False
    pseudonymise: bool = False
    pseudonym_salt: str | None = None
    heatmaps: HeatmapMode = HeatmapMode.POSITIVE
    triage: TriageRules = field(default_factory=TriageRules)
    verify_pixels: bool = False
    embed_limit: int = DEFAULT_EMBED_LIMIT
    table_limit: int = DEFAULT_TABLE_LIMIT

    def __post_init__(self) -> None:
        # Coerce at the boundary: callers may pass plain strings and str paths.
        object.__setattr__(self, "heatmaps", HeatmapMode(self.heatmaps))
        object.__setattr__(self, "archive", Path(self.archive))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("boxes", "reads", "model"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


@dataclass(frozen=True)
class ScanEvent:
    """Progress reported to the caller: a message, or batch progress."""

    kind: str  # "info" (message), "start" (total vertebrae to classify), "batch" (advance)
    message: str = ""
    total: int = 0
    advance: int = 0


@dataclass(frozen=True)
class ScanResult:
    """What a finished scan produced."""

    run_dir: Path
    reports: dict[str, Path]
    headline: str
    device: str
    threshold: float
    n_files: int
    n_candidates: int
    n_images: int
    n_vertebrae: int
    n_positive: int
    n_flagged: int
    status_counts: dict[StudyStatus, int]
    n_errors: int
    timings: dict[str, float]

    @property
    def vertebrae_per_second(self) -> float:
        """Vertebrae classified in this session per second of the whole scan (0 when none)."""
        total = self.timings.get("total_s", 0.0)
        done = self.timings.get("classified_this_session", 0.0)
        return done / total if total > 0 else 0.0


Progress = Callable[[ScanEvent], None]


def default_workers() -> int:
    """Worker processes for crop loading: one per spare core, at least one, at most four."""
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 1))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inventory(archive: Path, rules: TriageRules, verify_pixels: bool) -> list[FileEntry]:
    """Account for every file of the archive (the inventory's triage, not a copy of it)."""
    return [
        FileEntry(
            relative=record.relpath,
            path=record.path,
            size=record.size,
            status=record.status.value,
            reason=record.reason.value + (f": {record.detail}" if record.detail else ""),
            meta=record.meta,
        )
        for record in inventory(archive, rules, verify_pixels=verify_pixels)
    ]


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
    if config.boxes is None:
        raise UsageError(NO_BOXES_MESSAGE)
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
    assert config.boxes is not None
    started = time.perf_counter()
    timings: dict[str, float] = {}

    bundle = load_bundle(config.model)
    card = bundle.card
    device = select_device(config.device)
    classifier = Classifier(bundle, device, config.precision)
    if config.threshold is not None:
        threshold, op_name = float(config.threshold), "custom threshold"
    else:
        point = card.operating_point(config.operating_point)
        threshold, op_name = float(point.threshold), point.name
    emit(ScanEvent("info", f"Model: {card.headline()}"))
    emit(ScanEvent("info", f"Running on {classifier.describe()}; positive at P >= {threshold:.3f}"))

    t0 = time.perf_counter()
    files = _inventory(config.archive, config.triage, config.verify_pixels)
    candidates = {f.relative: f.meta for f in files if f.status == "candidate" and f.meta}
    box_file = read_box_file(config.boxes)
    resolved = resolve_boxes(box_file.boxes, candidates)
    reads_file: ReadsFile | None = read_reads_file(config.reads) if config.reads else None
    timings["inventory_s"] = time.perf_counter() - t0
    emit(
        ScanEvent(
            "info",
            f"{len(files)} files, {len(candidates)} candidate images, "
            f"{len(resolved.by_image)} with boxes ({resolved.n_boxes} vertebrae); "
            f"{len(box_file.errors) + len(resolved.errors)} box rows rejected"
            + (f", {len(reads_file.errors)} reads rows rejected" if reads_file else ""),
        )
    )

    fingerprint = {
        "archive": str(config.archive.resolve()),
        "boxes_sha256": _sha256(config.boxes),
        "model_sha256": bundle.sha256,
        "threshold": threshold,
        "heatmaps": config.heatmaps.value,
        "batch_size": config.batch_size,
        "device": device.type,
        "precision": classifier.precision,
        "triage": _rules_fingerprint(config.triage),
        "tlaudit": __version__,
    }
    paths = {f.relative: f.path for f in files}
    jobs = [ImageJob(image, paths[image], boxes) for image, boxes in resolved.by_image.items()]
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
        classified = _classify(jobs, batches, classifier, config, threshold, workers, journal, emit)
        timings["classification_s"] = time.perf_counter() - t0
        timings["classified_this_session"] = float(classified)

        t0 = time.perf_counter()
        outcomes = journal.outcomes()
    inputs = ScanInputs(
        run_dir=config.out,
        files=tuple(files),
        boxes=resolved.by_image,
        box_errors=box_file.errors + resolved.errors,
        reads=reads_file.reads if reads_file else None,
        read_errors=reads_file.errors if reads_file else (),
        threshold=threshold,
        pseudonymise=Pseudonymiser(salt, enabled=config.pseudonymise),
    )
    n_vertebrae = sum(
        1 for o in outcomes.values() for v in o.vertebrae if v.probability is not None
    )
    n_positive = sum(
        1
        for o in outcomes.values()
        for v in o.vertebrae
        if v.probability is not None and v.probability >= threshold
    )
    summary: list[tuple[str, SummaryValue]] = [
        ("tlaudit version", __version__),
        ("Archive", str(config.archive)),
        ("Box file", str(config.boxes)),
        ("Reads file", str(config.reads) if config.reads else "none"),
        ("Model", card.name),
        ("Model architecture", f"{card.architecture}, {card.input_size} px crops"),
        ("Model SHA-256", bundle.sha256),
        ("Operating point", f"{op_name} (P >= {threshold:.4f})"),
        ("Device", classifier.describe()),
        ("Batch size", config.batch_size),
        ("Loader workers", workers),
        ("Heatmaps", config.heatmaps.value),
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
    report = assemble_report(inputs, outcomes, summary)
    reports = {kind: config.out / name for kind, name in REPORT_NAMES.items()}
    write_findings_csv(report, reports["csv"])
    write_excel(report, config.out, reports["xlsx"])
    write_html(report, config.out, reports["html"], config.embed_limit, config.table_limit)
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


def _worker_init(_worker_id: int) -> None:
    # Workers decode and crop; one thread each keeps them from competing with the model.
    torch.set_num_threads(1)


def _classify(
    jobs: Sequence[ImageJob],
    batches: list[list[int]],
    classifier: Classifier,
    config: ScanConfig,
    threshold: float,
    workers: int,
    journal: RunJournal,
    emit: Progress,
) -> int:
    """Run the model over the remaining batches, committing each to the journal.

    Returns the number of vertebrae classified.
    """
    if not batches:
        return 0
    dataset = VertebraCropDataset(jobs, classifier.card)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=classifier.device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    want_cam = config.heatmaps is not HeatmapMode.NONE
    done = 0
    for batch in loader:
        prediction = classifier.predict(batch.crops, cam=want_cam) if batch.n_vertebrae else None
        outcomes = _outcomes(batch, prediction, threshold, config, journal.path.parent)
        journal.record(outcomes)
        done += batch.n_vertebrae
        emit(ScanEvent("batch", advance=sum(len(o.vertebrae) for o in outcomes)))
    return done


def _outcomes(
    batch: CropBatch,
    prediction: Prediction | None,
    threshold: float,
    config: ScanConfig,
    run_dir: Path,
) -> list[ImageOutcome]:
    """Turn one batch's predictions into journal rows, drawing heatmap overlays as asked."""
    outcomes: list[ImageOutcome] = []
    offset = 0
    for item in batch.images:
        if item.error:
            outcomes.append(
                ImageOutcome(
                    item.image,
                    "failed",
                    item.error,
                    tuple(
                        VertebraOutcome(box.row, box.level, None, "", reason)
                        for box, reason in item.box_errors
                    ),
                )
            )
            continue
        rows: list[VertebraOutcome] = []
        for k, box in enumerate(item.boxes):
            index = offset + k
            assert prediction is not None
            p = float(prediction.probs[index])
            heatmap = ""
            draw = config.heatmaps is HeatmapMode.ALL or (
                config.heatmaps is HeatmapMode.POSITIVE and p >= threshold
            )
            if draw and prediction.cams is not None:
                heatmap = f"{HEATMAP_DIR}/{thumbnail_name(item.image, box.level.value)}"
                overlay = heatmap_overlay(
                    np.asarray(batch.thumbs[index].numpy()), prediction.cams[index]
                )
                save_jpeg(overlay, run_dir / heatmap)
            rows.append(VertebraOutcome(box.row, box.level, p, heatmap, ""))
        rows += [
            VertebraOutcome(box.row, box.level, None, "", reason) for box, reason in item.box_errors
        ]
        offset += len(item.boxes)
        outcomes.append(
            ImageOutcome(
                item.image,
                "classified",
                "",
                tuple(sorted(rows, key=lambda v: v.box_row)),
            )
        )
    return outcomes
