"""Stages 1 and 2 of a scan: triage every file of the archive, then find the vertebra boxes.

Boxes come from the user's box file, or, without one, from the bundled vertebra localizer
(:mod:`auditor.localizer`), whose boxes are handed on in memory and written to
``RUN_DIR/localizer_boxes.csv`` as a by-product for review (and for ``--resume``). Either way they
are validated row by row and matched to the candidate images (:mod:`auditor.boxes`); a candidate
on which the localizer finds nothing usable is an error row with the reason.

With a box file, the localizer's domain guard still checks each image that has boxes, whole (the
*image check*), beside classification: :mod:`auditor.scan.image_check`.

A scan with nothing to audit stops here, before any model runs: an archive in which triage kept
no file (:class:`~auditor.archive.inventory.NoCandidatesError`, with the counts by reason), a
box file none of whose rows names a candidate image (:class:`~auditor.errors.InputFileError`,
with the rows' reasons counted).
"""

from __future__ import annotations

import csv
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch

from auditor.archive.inventory import FileRecord, NoCandidatesError, inventory, summarise
from auditor.boxes import BoxFile, ResolvedBoxes, degenerate_reason, read_box_file, resolve_boxes
from auditor.errors import InputFileError
from auditor.files import csv_unsafe
from auditor.model.bundle import ModelCard
from auditor.parallel import RayTasks
from auditor.records import (
    LocalizerOutcome,
    Radiograph,
    RadiographMeta,
    RowError,
    VertebraBox,
)
from auditor.reports.pseudonym import Pseudonymiser
from auditor.scan.assemble import FileEntry, shown_path
from auditor.scan.config import Progress, ScanConfig, ScanEvent, default_decode_workers
from auditor.scan.dataset import precut_path, write_precut
from auditor.scan.feed import FedFiles
from auditor.scan.reads import ReadsFile, read_reads_file
from auditor.vocab import Engine, FileStatus

logger = logging.getLogger(__name__)

LOCALIZER_BOXES = "localizer_boxes.csv"
"""Box file the localizer writes into RUN_DIR when the scan has no ``--boxes``."""
LOCALIZER_JOURNAL = "localizer_boxes.journal.jsonl"
"""Each image's localizer result as found, in RUN_DIR, when the archive is streamed."""


@dataclass(frozen=True)
class FoundBoxes:
    """Stages 1-2's output: the archive's files, the boxes matched to its candidates, the reads."""

    records: list[FileRecord]
    files: tuple[FileEntry, ...]
    candidates: dict[str, RadiographMeta]
    box_file: BoxFile
    resolved: ResolvedBoxes
    localizer_errors: tuple[RowError, ...]
    reads_file: ReadsFile | None
    # each candidate's localizer outcome (empty with a box file)
    localizer_outcomes: tuple[LocalizerOutcome, ...] = ()


def _localize(
    config: ScanConfig,
    card: ModelCard,
    records: list[FileRecord],
    device: torch.device,
    emit: Progress,
    anon: Pseudonymiser,
) -> tuple[BoxFile, tuple[LocalizerOutcome, ...]]:
    """Find vertebra boxes with the localizer; return them (as a box file states them) and every
    candidate's outcome (:func:`_localizer_errors` makes the images on which nothing usable was
    found, or that could not be read, error rows).

    With ``--pseudonymise`` the two files name each image as the reports do, without its
    identifiers (``anon``); a resumed scan maps those names back to the candidates.

    The boxes are handed on in memory. The box file is written into RUN_DIR as a by-product, so a
    person can review or correct it (and pass it back with ``--boxes``), and so that a resumed
    scan reads it back instead of localizing again. The classifier's crops
    are cut from the localizer's decode of each image (``RUN_DIR/precut/``), so the loader does
    not decode it a second time. The scan's loader workers decode the next images meanwhile.

    A streamed archive (``config.feed``, a PACS scan) brings each file as the pass reads it and
    lets it go once read, its crops stored (:mod:`auditor.scan.feed`); each image's result goes
    to a journal beside the box file as it is found (:data:`LOCALIZER_JOURNAL`), from which a
    resumed scan takes the images already localized, so that only the rest (those unreadable
    or not brought included) are retrieved and localized again.
    """
    from auditor.localizer import localize_archive  # torch model; only needed without --boxes

    whole: set[str] = set()  # images whose crops are all stored

    def precut(image: str, radiograph: Radiograph, found: list[VertebraBox]) -> None:
        boxes = [(box.level.value, box.xyxy) for box in found]
        try:
            cut = write_precut(precut_path(config.out, image), radiograph.pixels, boxes, card)
        except (OSError, ValueError) as err:  # e.g. a full disk: the loader decodes it instead
            logger.warning("cannot store an image's crops (%s); it will be decoded again", err)
            return
        if cut == len(boxes):
            whole.add(image)

    out = config.out / LOCALIZER_BOXES
    outcomes = out.with_name(out.stem + ".images.csv")
    real = {
        shown_path(anon, r.relpath, r.meta): r.relpath
        for r in records
        if r.status is FileStatus.CANDIDATE
    }
    feed = config.feed
    relpaths = {r.path: r.relpath for r in records}
    arrivals = None if feed is None else FedFiles(feed, lambda p: relpaths[p] in whole)
    if feed is None and config.resume and out.is_file() and outcomes.is_file():
        with outcomes.open(newline="", encoding="utf-8") as handle:
            stored = [_stored_outcome(row) for row in csv.DictReader(handle)]
        box_file = read_box_file(out, allow_empty=True)
        if all(o.image in real for o in stored) and all(b.image in real for b in box_file.rows):
            # the files name images as the reports do; the scan goes on with the archive's paths
            stored = [replace(o, image=real[o.image]) for o in stored]
            rows = tuple(replace(b, image=real[b.image]) for b in box_file.rows)
            return replace(box_file, rows=rows), tuple(stored)
        logger.warning("%s names images this archive does not hold: localizing again", out)
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
        shown=(lambda r: shown_path(anon, r.relpath, r.meta)) if anon.enabled else None,
        # on Ray each image is decoded and localized by a task, the localizer loaded per worker
        executor=RayTasks(config.ray_address) if config.engine is Engine.RAY else None,
        arrivals=arrivals,
        journal=None if feed is None else config.out / LOCALIZER_JOURNAL,
    )
    emit(
        ScanEvent(
            "info",
            f"Localizer: {done.boxes} boxes on {done.localized} of {done.candidates} "
            f"candidate images; nothing usable on {done.nothing_found}, "
            f"{done.unreadable} unreadable; boxes in {out}",
        )
    )
    kept: list[VertebraBox] = []
    rejected: list[RowError] = []
    for box in done.found:
        reason = degenerate_reason(box.xyxy)
        if reason:
            rejected.append(RowError(box.row, reason, box.image, box.level.value))
        else:
            kept.append(box)
    return BoxFile(out, tuple(kept), tuple(rejected)), tuple(done.outcomes)


def _stored_outcome(row: dict[str, str]) -> LocalizerOutcome:
    """One row of ``<stem>.images.csv`` read back on ``--resume``, the localizer's domain-guard
    distance and verdict included (files written before the guard have neither)."""
    try:
        distance: float | None = float(row.get("distance") or "nan")
    except ValueError:
        distance = None
    if distance is not None and distance != distance:  # NaN: not measured
        distance = None
    return LocalizerOutcome(
        csv_unsafe(row["image"]),
        row["status"],
        csv_unsafe(row["reason"]),
        distance,
        row.get("out_of_distribution", "") == "yes",
    )


def _localizer_errors(outcomes: Iterable[LocalizerOutcome]) -> tuple[RowError, ...]:
    """One error per image the localizer found nothing usable on or could not read."""
    return tuple(
        RowError(0, o.reason or o.status.replace("_", " "), o.image, source="localizer")
        for o in outcomes
        if o.status != "localized"
    )


def find_boxes(
    config: ScanConfig,
    card: ModelCard,
    device: torch.device,
    timings: dict[str, float],
    emit: Progress,
    anon: Pseudonymiser,
) -> FoundBoxes:
    """Stages 1 and 2: triage every file, then boxes from the box file or the localizer, matched
    to the candidate images, and the reads file; ``timings`` gains ``inventory_s`` (and
    ``localizer_s``)."""
    t0 = time.perf_counter()
    # the run folder may lie inside the archive: its files are the scan's, not the archive's
    records = (
        list(config.records)  # a streamed PACS scan: the query's rows, the files arrive later
        if config.records is not None
        else list(
            inventory(
                config.archive,
                config.triage,
                verify_pixels=config.verify_pixels,
                skip=(config.out,),
            )
        )
    )
    files = tuple(FileEntry.of(record) for record in records)
    candidates = {f.relative: f.meta for f in files if f.status == "candidate" and f.meta}
    if not candidates:
        raise NoCandidatesError(config.archive, summarise(records))
    localizer_outcomes: tuple[LocalizerOutcome, ...] = ()
    if config.boxes is None:
        t_loc = time.perf_counter()
        box_file, localizer_outcomes = _localize(config, card, records, device, emit, anon)
        timings["localizer_s"] = time.perf_counter() - t_loc
    else:
        box_file = read_box_file(config.boxes, config.box_format)
        for note in box_file.notes:
            emit(ScanEvent("info", f"Box file read as {note}"))
    resolved = resolve_boxes(box_file.rows, candidates)
    for note in resolved.notes:
        emit(ScanEvent("info", f"warning: {note}"))
    if config.boxes is not None and not resolved.by_image:
        raise InputFileError(
            f"box file {config.boxes}: none of its rows gives a usable box on one of the "
            f"{len(candidates)} candidate images of {config.archive}; "
            + reason_counts([*box_file.errors, *resolved.errors])
        )
    reads_file = (
        read_reads_file(config.reads, dict(config.reads_columns), config.reads_rules)
        if config.reads
        else None
    )
    for note in reads_file.notes if reads_file else ():
        emit(ScanEvent("info", f"Reads file {note}"))
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
    return FoundBoxes(
        records,
        files,
        candidates,
        box_file,
        resolved,
        _localizer_errors(localizer_outcomes),
        reads_file,
        localizer_outcomes,
    )


def reason_counts(errors: Sequence[RowError], shown: int = 4) -> str:
    """Rejected rows counted by kind of reason (quoted values and numbers left out), most
    frequent first, each kind with its first row as the example."""
    kinds: Counter[str] = Counter()
    example: dict[str, RowError] = {}
    for error in errors:
        kind = re.sub(r"'[^']*'|\d+(?:\.\d+)?", "_", error.reason)
        kinds[kind] += 1
        example.setdefault(kind, error)
    parts = [f"{count} rows like {example[kind]}" for kind, count in kinds.most_common(shown)]
    if len(kinds) > shown:
        parts.append(f"{sum(kinds.values()) - sum(c for _, c in kinds.most_common(shown))} more")
    return "; ".join(parts) or "no rows"
