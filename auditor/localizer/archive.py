"""``tlaudit localize``: run the localizer over an archive and write a box file.

Candidates come from the archive inventory and triage (:mod:`auditor.archive`), so the same files
a scan would keep are localized. The box file has the columns ``scan --boxes`` reads (``image``,
``sop_instance_uid``, ``level``, ``x_min``..``y_max``, ``patient_id``, ``study_uid``) plus
``source`` (always ``localizer``), ``confidence`` (detection score), ``level_confidence`` and
``anchor`` for a person reviewing it. A second CSV beside it (``<stem>.images.csv``) lists every
candidate with its outcome: how many boxes, partial bodies, the anchor, the reason when nothing
usable was found or the file could not be read, and the localizer's domain-guard distance with
whether it put the image out of distribution (:mod:`auditor.localizer.guard`: such an image gets
no box and is counted with the images on which nothing usable was found). Nothing stops the
batch. A scan with
``--pseudonymise`` has both files name each image as its reports do, without its identifiers
(``shown`` of :func:`localize_archive`).

A streamed archive (a PACS scan, whose files arrive while the pass runs and go once read) hands
its files over through :class:`Arrivals`, and keeps each image's result in a journal as it is
found (``journal``), so a pass that is interrupted resumes without reading those images again.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from auditor.archive.inventory import FileRecord, inventory
from auditor.archive.triage import TriageRules
from auditor.boxes import BOX_COORDS
from auditor.errors import READ_FAILURES, BundleError, TlauditError, read_failure_reason
from auditor.files import atomic_path, csv_safe
from auditor.io.radiograph import read_radiograph
from auditor.localizer.bundle import DEFAULT_LOCALIZER, card_sha256
from auditor.localizer.guard import image_distances
from auditor.localizer.infer import (
    Localizer,
    LocalizerResult,
    PartialBody,
    load_localizer,
    network_inputs,
)
from auditor.localizer.plausible import RunRules
from auditor.parallel import Executor, Loaded, map_in_order, once_per_worker
from auditor.records import LocalizerOutcome, Radiograph, VertebraBox, is_out_of_distribution
from auditor.resources import resource_path
from auditor.vocab import FileStatus, Level

logger = logging.getLogger(__name__)

#: The box file's columns: those ``scan --boxes`` reads (:data:`auditor.boxes.BOX_FILE_COLUMNS`)
#: plus two for a person reviewing it.
BOX_COLUMNS = (
    "image",
    "sop_instance_uid",
    "level",
    *BOX_COORDS,
    "source",
    "confidence",
    "level_confidence",
    "anchor",
    "patient_id",
    "study_uid",
)
IMAGE_COLUMNS = (
    "image",
    "status",
    "boxes",
    "partial",
    "anchor",
    "level_confidence",
    "reason",
    "distance",
    "out_of_distribution",
)


@dataclass(frozen=True)
class LocalizeSummary:
    """What ``localize_archive`` did: the boxes it found, each image's outcome, files and counts.

    ``nothing_found`` counts every readable candidate without boxes; ``out_of_distribution`` those
    of them the domain guard refused.

    ``found`` holds the boxes exactly as the box file states them (coordinates rounded as
    written, rows numbered as the file's data rows), so a caller can use them in memory and a
    later run that reads the file back gets the same boxes.
    """

    box_file: Path
    image_file: Path
    files: int
    candidates: int
    localized: int
    nothing_found: int
    unreadable: int
    boxes: int
    found: tuple[VertebraBox, ...] = ()
    outcomes: tuple[LocalizerOutcome, ...] = ()
    out_of_distribution: int = 0


def _atomic_csv(path: Path, header: tuple[str, ...], rows: list[dict[str, object]]) -> None:
    """Write ``rows`` atomically, formula-like text (a file name, say) neutralised; the box file
    reader takes the neutralisation off again (:func:`auditor.files.csv_unsafe`)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header))
        writer.writeheader()
        writer.writerows({key: csv_safe(value) for key, value in row.items()} for row in rows)


class Arrivals(Protocol):
    """Files that arrive while :func:`localize_archive` runs, and may go once it has read them
    (a streamed PACS scan, :mod:`auditor.scan.feed`)."""

    @property
    def wait(self) -> Callable[[Path], None]:
        """Called in the decoding process before a file is read; returns once it is there, or
        raises one of :data:`~auditor.errors.READ_FAILURES` saying why it will not come.
        Picklable (it runs in worker processes)."""
        ...

    def expect(self, paths: Sequence[Path]) -> None:
        """The files the pass will read, in that order, before it reads any."""
        ...

    def done(self, path: Path) -> None:
        """The pass is done with this file (after ``on_located``)."""
        ...


class _Decoder(Dataset[Radiograph | str]):
    """Decodes one candidate file per item: the radiograph, or the reason it cannot be read;
    ``wait`` first waits for a file that is still arriving (:class:`Arrivals`)."""

    def __init__(self, paths: Sequence[Path], wait: Callable[[Path], None] | None = None) -> None:
        self.paths = tuple(paths)
        self.wait = wait

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Radiograph | str:
        try:
            if self.wait is not None:
                self.wait(self.paths[index])
            return read_radiograph(self.paths[index])
        except READ_FAILURES as err:  # a file that vanished or a decoder failure: this image only
            return read_failure_reason(err)

    def lost(self, index: int, reason: str) -> str:
        """The image whose decoding worker died (out of memory): a reason, like a failure."""
        return reason


def decode_in_order(
    paths: Sequence[Path], workers: int, wait: Callable[[Path], None] | None = None
) -> Iterator[Radiograph | str]:
    """Decode ``paths`` in order; with ``workers`` > 0, in that many worker processes, a couple
    of images ahead of the caller, so decoding overlaps the caller's work on the previous one
    (``wait``: each file first waited for, :class:`Arrivals`)."""
    decoder = _Decoder(paths, wait)
    yield from map_in_order(decoder, len(decoder), workers)


@dataclass(frozen=True)
class LocalizerSpec:
    """What a worker process needs to load the caller's localizer itself (``--engine ray``).

    ``bundle`` None is the bundled localizer of the worker's own tlaudit; either way the card a
    worker loads must have the SHA-256 the caller's has (the card records the weights' and the
    guard's hashes, checked when the bundle loads), so every node runs the same localizer.
    ``rules`` and ``guarded`` repeat how the caller's localizer was set up.
    """

    bundle: Path | None
    card_sha256: str
    rules: RunRules | None
    guarded: bool

    @classmethod
    def of(cls, localizer: Localizer) -> LocalizerSpec:
        """The spec of a localizer loaded from a bundle folder.

        Raises
        ------
        BundleError
            For a localizer that was not loaded from a bundle (its workers could not load it).
        """
        if localizer.path is None:
            raise BundleError("a localizer built in memory cannot be loaded by worker processes")
        folder = Path(localizer.path)
        try:
            bundled = folder.resolve() == resource_path("models", DEFAULT_LOCALIZER).resolve()
        except TlauditError:  # no bundled localizer here: the folder is named as it is
            bundled = False
        return cls(
            None if bundled else folder,
            card_sha256(folder),
            localizer.rules,
            localizer.guard is not None,
        )


def worker_localizer(spec: LocalizerSpec) -> Localizer:
    """The localizer of ``spec``, loaded once per worker process (:func:`~auditor.parallel.
    once_per_worker`), on its CPU.

    Raises
    ------
    BundleError
        When the bundle this worker finds is not the one the caller loaded (its card's SHA-256).
    """

    def load() -> Loaded[Localizer]:
        loaded = load_localizer(spec.bundle)
        localizer = Localizer(
            loaded.net,
            loaded.card,
            loaded.path,
            rules=spec.rules,
            guard=loaded.guard if spec.guarded else None,
        )
        found = card_sha256(Path(str(loaded.path)))
        return Loaded(localizer, f"the card of localizer {loaded.path}", found)

    return once_per_worker(spec, spec.card_sha256, load)


@dataclass(frozen=True)
class _Located:
    """Decodes and localizes one candidate per item, in the worker process that runs it: the
    localizer's result, or the reason the file cannot be read."""

    paths: tuple[Path, ...]
    spec: LocalizerSpec
    wait: Callable[[Path], None] | None = None

    def __getitem__(self, index: int) -> LocalizerResult | str:
        try:
            if self.wait is not None:
                self.wait(self.paths[index])
            radiograph = read_radiograph(self.paths[index])
        except READ_FAILURES as err:
            return read_failure_reason(err)
        localizer = worker_localizer(self.spec)
        return localizer.locate(radiograph.pixels, radiograph.meta.pixel_spacing_mm)

    def lost(self, index: int, reason: str) -> str:
        """The image whose worker died every time it was tried: a reason, like a failure."""
        return reason


def _results(
    loc: Localizer,
    paths: Sequence[Path],
    workers: int,
    executor: Executor | None,
    wait: Callable[[Path], None] | None = None,
) -> Iterator[tuple[Radiograph | None, LocalizerResult | str]]:
    """Each candidate's decode (None when it was decoded elsewhere) and localizer result (or the
    reason it cannot be read), in order: decoded ahead in ``workers`` processes and localized
    here, or both done as tasks of ``executor``; ``wait`` as :class:`Arrivals`."""
    if executor is not None:
        located = _Located(tuple(paths), LocalizerSpec.of(loc), wait)
        for result in executor.map_in_order(located, len(paths)):
            yield None, result
        return
    with _cores_for_decoders(workers):
        for radiograph in decode_in_order(paths, workers, wait):
            if isinstance(radiograph, str):
                yield None, radiograph
            else:
                yield radiograph, loc.locate(radiograph.pixels, radiograph.meta.pixel_spacing_mm)


@dataclass(frozen=True)
class ImageCheck:
    """One image's verdict of the image check (:func:`check_images`): its localizer-guard
    distance and whether that puts it out of distribution, or the reason it cannot be read."""

    distance: float | None
    out_of_distribution: bool
    unreadable: str = ""


@dataclass(frozen=True)
class _CheckInputs:
    """Decodes one image per item in the worker process that runs it and returns the localizer
    network's input for it (or the reason the file cannot be read): only the small canvas
    crosses back, not the full-resolution image."""

    paths: tuple[Path, ...]
    size: int

    def __getitem__(self, index: int) -> torch.Tensor | str:
        try:
            radiograph = read_radiograph(self.paths[index])
        except READ_FAILURES as err:  # a file that vanished or a decoder failure: this image only
            return read_failure_reason(err)
        return network_inputs([radiograph.pixels], self.size)[0]

    def lost(self, index: int, reason: str) -> str:
        """The image whose worker died (out of memory): a reason, like a failure."""
        return reason


def check_images(
    localizer: Localizer, paths: Sequence[Path], workers: int = 0
) -> Iterator[ImageCheck]:
    """The localizer's domain guard on each image of ``paths`` without localizing it
    (:func:`auditor.localizer.guard.image_distances`, the network run only up to the guard's
    stages), in order: the image check of a scan with a box file, for the images it classified
    without one (a scan's own check runs in its loader, :mod:`auditor.scan.image_check`).

    Each image is decoded in ``workers`` processes a couple of images ahead (0: here); only the
    network's input comes back to this process. An unreadable file gives its reason and no
    verdict; it never stops the pass.

    Raises
    ------
    ValueError
        When ``localizer`` has no domain guard.
    """
    guard = localizer.guard
    if guard is None:
        raise ValueError(f"localizer {localizer.path} has no domain guard")
    inputs = _CheckInputs(tuple(paths), localizer.card.working_size)
    with _cores_for_decoders(workers):
        for canvas in map_in_order(inputs, len(inputs.paths), workers):
            if isinstance(canvas, str):
                yield ImageCheck(None, False, canvas)
                continue
            distance = float(image_distances(localizer.net, canvas, guard)[0])
            yield ImageCheck(distance, is_out_of_distribution(distance, guard.threshold))


@contextmanager
def _cores_for_decoders(workers: int) -> Iterator[None]:
    """Leave the decoding workers their cores: torch's threads in this process drop to the cores
    the workers do not use (at least one) and are restored afterwards. Decoding costs several
    times the localizer's network, and torch's threads competing with the workers cancelled the
    gain (150 compressed 1500 px images, 2 cores, 2 workers: 23.2 s with 2 threads, 17.7 s with
    1, 25.0 s decoding in this process)."""
    before = torch.get_num_threads()
    if workers > 0:
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _result_json(result: LocalizerResult) -> dict[str, Any]:
    """One image's result as a journal line holds it (JSON floats read back exactly)."""
    return {
        "boxes": [
            {
                "level": box.level.value,
                "xyxy": list(box.xyxy),
                "source": box.source,
                "confidence": box.confidence,
            }
            for box in result.boxes
        ],
        "partial": [[p.x_min, p.y_min, p.x_max, p.y_max, p.confidence] for p in result.partial],
        "anchor": result.anchor,
        "level_confidence": result.level_confidence,
        "reason": result.reason,
        "distance": result.distance,
        "out_of_distribution": result.out_of_distribution,
    }


def _result_of(item: Mapping[str, Any]) -> LocalizerResult:
    """A journal line's result (:func:`_result_json`)."""
    boxes = tuple(
        VertebraBox(
            row=i + 1,
            image="",
            sop_instance_uid="",
            level=Level(box["level"]),
            x_min=float(box["xyxy"][0]),
            y_min=float(box["xyxy"][1]),
            x_max=float(box["xyxy"][2]),
            y_max=float(box["xyxy"][3]),
            source=str(box["source"]),
            confidence=None if box["confidence"] is None else float(box["confidence"]),
        )
        for i, box in enumerate(item["boxes"])
    )
    distance, out = item["distance"], item["out_of_distribution"]
    if not isinstance(out, bool):  # "no" would read as True: such a line does not parse
        raise TypeError(f"out_of_distribution must be true or false, got {out!r}")
    return LocalizerResult(
        boxes,
        tuple(PartialBody(*(float(v) for v in part)) for part in item["partial"]),
        str(item["anchor"]),
        float(item["level_confidence"]),
        str(item["reason"]),
        None if distance is None else float(distance),
        out,
    )


def _read_journal(journal: Path) -> dict[str, LocalizerResult]:
    """The results a pass's journal holds, by image name; a torn last line (a killed pass) and
    lines that do not parse are passed over (those images are localized again)."""
    found: dict[str, LocalizerResult] = {}
    if not journal.is_file():
        return found
    with journal.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
                found[str(item["image"])] = _result_of(item["result"])
            except (ValueError, KeyError, TypeError, IndexError):
                logger.info("%s: passing over a line that does not parse", journal)
    return found


def localize_archive(
    archive: Path,
    out: Path,
    bundle: Path | None = None,
    rules: TriageRules | None = None,
    localizer: Localizer | None = None,
    progress: Callable[[str], None] | None = None,
    on_located: Callable[[str, Radiograph, list[VertebraBox]], None] | None = None,
    records: Iterable[FileRecord] | None = None,
    workers: int = 0,
    device: torch.device | None = None,
    shown: Callable[[FileRecord], str] | None = None,
    executor: Executor | None = None,
    arrivals: Arrivals | None = None,
    journal: Path | None = None,
) -> LocalizeSummary:
    """Localize every candidate radiograph of ``archive`` and write the box file ``out``.

    Parameters
    ----------
    archive
        Archive root.
    out
        Box file to write (CSV); the per-image outcome goes to ``<stem>.images.csv`` beside it.
    bundle
        Localizer bundle folder (None: the bundled default); ignored when ``localizer`` is given.
    rules
        Triage rules (default: lateral TL-spine radiographs).
    localizer
        An already loaded localizer.
    progress
        Called with each candidate's archive-relative path after it is done.
    on_located
        Called with the archive-relative path, the decoded radiograph and its boxes as the box
        file states them (coordinates rounded as in the file), for each image with boxes;
        ``scan`` uses it to cut the classifier's crops from this decode instead of decoding
        again.
    records
        The archive's inventory when the caller already has it (``scan`` does), so the archive
        is not walked a second time; by default :func:`~auditor.archive.inventory.inventory`
        of ``archive`` with ``rules``.
    workers
        Processes that decode the next images while the localizer runs on the current one
        (0: decode in this process, one image after another).
    device
        Where the localizer's network runs when this call loads it (default: the CPU).
    shown
        How the two files name an image (default: its archive-relative path). When given (a
        scan with ``--pseudonymise`` passes the reports' pseudonymised path), the files also
        leave the SOP Instance UID, patient ID and Study Instance UID columns blank; the boxes
        in ``found`` keep the real path and identifiers.
    executor
        Decode and localize each candidate as a task of this executor instead (``--engine
        ray``: a Ray task per image, the localizer loaded once in each worker process, checked
        against this one's card); ``workers`` is then unused, and ``on_located`` is not called
        (no decode comes back to this process: the scan's classifying tasks decode again).
    arrivals
        The candidates' files arrive while the pass runs and may go once read
        (:class:`Arrivals`): told which files it will read, each waited for before its decode,
        and told when the pass is done with it.
    journal
        A JSON-lines file to which each image's result is appended as it is found (named as
        the two files name it); the results it already holds are used as they are, those
        images not read again. Unreadable images are not kept: a later pass tries them again.

    Raises
    ------
    BundleError
        When the localizer bundle cannot be loaded.
    NotADirectoryError
        When ``archive`` is not a folder.
    """
    loc = localizer or load_localizer(bundle, device)
    box_rows: list[dict[str, object]] = []
    found: list[VertebraBox] = []
    image_rows: list[dict[str, object]] = []
    outcomes: list[LocalizerOutcome] = []
    localized = nothing = unreadable = refused = 0
    out = Path(out)
    image_file = out.with_name(out.stem + ".images.csv")
    if records is None:  # the box files are this command's output, even inside the archive
        records = inventory(Path(archive), rules, skip=(out, image_file))
    walked = list(records)
    files = len(walked)
    chosen = [record for record in walked if record.status is FileStatus.CANDIDATE]
    candidates = len(chosen)
    known = _read_journal(journal) if journal is not None else {}
    naming = (lambda r: r.relpath) if shown is None else shown
    todo = [record.path for record in chosen if naming(record) not in known]
    if arrivals is not None:
        arrivals.expect(todo)
    fresh = _results(loc, todo, workers, executor, arrivals.wait if arrivals else None)
    with contextlib.ExitStack() as stack:
        appended = None
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            appended = stack.enter_context(journal.open("a", encoding="utf-8"))
        for record in chosen:
            name = naming(record)
            radiograph: Radiograph | None
            result: LocalizerResult | str
            if name in known:
                radiograph, result = None, known[name]
            else:
                radiograph, result = next(fresh)
                if appended is not None and not isinstance(result, str):
                    item = {"image": name, "result": _result_json(result)}
                    appended.write(json.dumps(item) + "\n")
                    appended.flush()
            meta = record.meta
            if isinstance(result, str):
                unreadable += 1
                image_rows.append({"image": name, "status": "unreadable", "reason": result})
                outcomes.append(LocalizerOutcome(record.relpath, "unreadable", result))
                if arrivals is not None and name not in known:
                    arrivals.done(record.path)
                continue
            status = "localized" if result.boxes else "nothing_found"
            localized += bool(result.boxes)
            nothing += not result.boxes
            refused += result.out_of_distribution
            image_rows.append(
                {
                    "image": name,
                    "status": status,
                    "boxes": len(result.boxes),
                    "partial": len(result.partial),
                    "anchor": result.anchor,
                    "level_confidence": round(result.level_confidence, 4),
                    "reason": result.reason,
                    "distance": "" if result.distance is None else round(result.distance, 4),
                    "out_of_distribution": "yes" if result.out_of_distribution else "",
                }
            )
            outcomes.append(
                LocalizerOutcome(
                    record.relpath,
                    status,
                    result.reason,
                    result.distance,
                    result.out_of_distribution,
                )
            )
            rows: list[dict[str, object]] = []
            stated_boxes: list[VertebraBox] = []
            for box in result.boxes:
                stated = VertebraBox(
                    row=len(box_rows) + len(rows) + 1,
                    image=record.relpath,
                    sop_instance_uid=meta.sop_uid if meta else "",
                    level=box.level,
                    x_min=round(box.x_min, 2),
                    y_min=round(box.y_min, 2),
                    x_max=round(box.x_max, 2),
                    y_max=round(box.y_max, 2),
                    patient_id=meta.patient_id if meta else "",
                    study_uid=meta.study_uid if meta else "",
                    source=box.source,
                    confidence=box.confidence,
                )
                stated_boxes.append(stated)
                identifiers = shown is None
                rows.append(
                    {
                        "image": name,
                        "sop_instance_uid": stated.sop_instance_uid if identifiers else "",
                        "level": stated.level.value,
                        "x_min": stated.x_min,
                        "y_min": stated.y_min,
                        "x_max": stated.x_max,
                        "y_max": stated.y_max,
                        "source": stated.source,
                        "confidence": stated.confidence,
                        "level_confidence": round(result.level_confidence, 4),
                        "anchor": result.anchor,
                        "patient_id": stated.patient_id if identifiers else "",
                        "study_uid": stated.study_uid if identifiers else "",
                    }
                )
            box_rows.extend(rows)
            found.extend(stated_boxes)
            if stated_boxes and on_located is not None and radiograph is not None:
                on_located(record.relpath, radiograph, stated_boxes)
            if arrivals is not None and name not in known:
                arrivals.done(record.path)
            if progress is not None:
                progress(record.relpath)
    _atomic_csv(out, BOX_COLUMNS, box_rows)
    _atomic_csv(image_file, IMAGE_COLUMNS, image_rows)
    logger.info(
        "localized %d of %d candidates (%d boxes; %d out of distribution)",
        localized,
        candidates,
        len(box_rows),
        refused,
    )
    return LocalizeSummary(
        out,
        image_file,
        files,
        candidates,
        localized,
        nothing,
        unreadable,
        len(box_rows),
        tuple(found),
        tuple(outcomes),
        refused,
    )
