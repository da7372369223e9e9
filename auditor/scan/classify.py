"""The classification loop: crops from the executor's workers through the model, into the journal.

Worker processes decode and crop the next batches while the main process runs the model on the
current one (two batches ahead per worker, :class:`auditor.parallel.LocalProcesses`). On CUDA the
batches arrive in pinned memory and are copied without blocking. Class activation maps and each
crop's domain-guard distance come from the same forward pass; an overlay thumbnail is drawn only
for the vertebrae that need one (positive, or all on request). With the image check
(:mod:`auditor.scan.image_check`) the workers return each image's localizer canvas too, and the
localizer guard's network runs here on each batch's canvases after the classifier. Each batch
is committed to the journal in one transaction (the image check's distances with it) before the
next is taken, so a killed scan loses at most the batch in flight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditor.localizer.guard import image_distances
from auditor.localizer.infer import Localizer
from auditor.model.infer import Classifier, Prediction
from auditor.parallel import Executor, Loaded, once_per_worker
from auditor.records import VertebraBox, is_positive
from auditor.reports.thumbnails import (
    HEATMAP_DIR,
    RADIOGRAPH_DIR,
    DrawnBox,
    draw_boxes,
    heatmap_overlay,
    heatmap_values_path,
    save_heatmap_values,
    save_jpeg,
    thumbnail_name,
)
from auditor.scan.config import HeatmapMode, Progress, ScanEvent
from auditor.scan.dataset import CropBatch, CropBatches, ImageJob
from auditor.scan.journal import ImageOutcome, RunJournal, VertebraOutcome

#: The error row of a vertebra whose probability came out NaN or infinite.
NON_FINITE = (
    "the model gave a non-finite probability (NaN or infinite): the bundle's weights or card "
    "are damaged, or the crop is; check the bundle with tlaudit evaluate"
)


@dataclass(frozen=True)
class ClassifyStats:
    """Where the classification loop spent its time (seconds) and what it did."""

    vertebrae: int
    batches: int
    heatmaps: int
    wait_s: float  # waiting for the loader (decoding and cropping not hidden by the model)
    model_s: float  # forward passes, heatmap passes included
    maps_s: float  # the separate heatmap pass (layercam, Grad-CAM) within model_s
    heatmap_s: float  # drawing and writing overlay thumbnails
    journal_s: float  # committing results
    check_s: float = 0.0  # the image check's guard network on the batches' canvases, here
    checked: int = 0  # images the image check measured


@dataclass(frozen=True)
class ModelSpec:
    """What a worker process needs to build the scan's classifier itself (``--engine ray``).

    ``bundle`` None is the bundled model of the worker's own tlaudit; either way the bundle a
    worker loads must have the SHA-256 the scan recorded, so every node runs the same weights.
    ``precision`` and ``heatmap_method`` are the ones the scanning process resolved.
    """

    bundle: Path | None
    sha256: str
    precision: str
    heatmap_method: str


@dataclass(frozen=True)
class ClassifiedBatches:
    """The crop batches and their predictions, computed together in a worker process (on Ray:
    the model runs where the crops are cut, one model per worker process, loaded once)."""

    crops: CropBatches
    model: ModelSpec
    cam: bool
    cam_min_prob: float

    def __getitem__(self, index: int) -> tuple[CropBatch, Prediction | None]:
        batch = self.crops[index]
        if not batch.n_vertebrae:
            return batch, None
        classifier = _worker_classifier(self.model)
        return batch, classifier.predict(batch.crops, cam=self.cam, cam_min_prob=self.cam_min_prob)

    def lost(self, index: int, reason: str) -> tuple[CropBatch, Prediction | None]:
        return self.crops.lost(index, reason), None


def _worker_classifier(spec: ModelSpec) -> Classifier:
    """The classifier of ``spec``, loaded once per worker process (:func:`~auditor.parallel.
    once_per_worker`), on its CPU.

    Raises
    ------
    BundleError
        When the bundle this worker finds is not the one the scan recorded.
    """

    def load() -> Loaded[Classifier]:
        from auditor.model.bundle import load_bundle

        bundle = load_bundle(spec.bundle)
        classifier = Classifier(bundle, torch.device("cpu"), spec.precision, spec.heatmap_method)
        return Loaded(classifier, f"model {bundle.path}", bundle.sha256)

    return once_per_worker(spec, spec.sha256, load)


def classify_batches(
    jobs: Sequence[ImageJob],
    batches: list[list[int]],
    classifier: Classifier,
    heatmaps: HeatmapMode,
    threshold: float,
    executor: Executor,
    journal: RunJournal,
    emit: Progress,
    on_workers: ModelSpec | None = None,
    image_check: Localizer | None = None,
) -> ClassifyStats:
    """Classify the given batches of images and commit each batch to the journal.

    Parameters
    ----------
    jobs
        All images of the run with their boxes.
    batches
        Indices into ``jobs``, one list per batch (see :func:`~auditor.scan.dataset.pack_batches`).
    classifier
        The model on its device.
    heatmaps
        Which vertebrae get an overlay thumbnail.
    threshold
        Probability at or above which a vertebra is positive.
    executor
        Runs the per-image work (read, cut, collate one batch) ahead of the model; on CUDA it
        should hand batches back in pinned memory.
    journal
        The run journal; thumbnails go under its directory.
    emit
        Progress callback (one ``batch`` event per committed batch).
    on_workers
        The model the executor's workers run themselves (:class:`ClassifiedBatches`), instead
        of ``classifier`` here: then ``wait_s`` holds their cutting and classifying time.
    image_check
        The localizer whose domain guard measures each image (:mod:`auditor.scan.image_check`):
        the workers return each decoded image's canvas, its network runs here on each batch's
        canvases, and the distances are committed with the batch. None: no image check.
    """
    if not batches:
        return ClassifyStats(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0)
    want_cam = heatmaps is not HeatmapMode.NONE
    # with positive-only thumbnails, gradient heatmaps are computed for positive crops only
    cam_min_prob = threshold if heatmaps is HeatmapMode.POSITIVE else 0.0
    canvas_size = None if image_check is None else image_check.card.working_size
    crops = CropBatches(jobs, batches, classifier.card, canvas_size)
    loader: Iterable[tuple[CropBatch, Prediction | None]] = (
        ((batch, None) for batch in executor.map_in_order(crops, len(batches)))
        if on_workers is None
        else executor.map_in_order(
            ClassifiedBatches(crops, on_workers, want_cam, cam_min_prob), len(batches)
        )
    )
    run_dir = journal.path.parent
    done = drawn = 0
    wait = model = maps = drawing = committing = checking = 0.0
    checked = 0
    tick = time.perf_counter()
    for batch, classified in loader:
        t0 = time.perf_counter()
        wait += t0 - tick
        if on_workers is not None:
            prediction = classified
        else:
            prediction = (
                classifier.predict(batch.crops, cam=want_cam, cam_min_prob=cam_min_prob)
                if batch.n_vertebrae
                else None
            )
        t1 = time.perf_counter()
        distances = _image_distances(batch, image_check) if image_check is not None else {}
        t_check = time.perf_counter()
        maps += prediction.heatmap_s if prediction else 0.0
        outcomes, n_drawn = _outcomes(batch, prediction, threshold, heatmaps, run_dir)
        t2 = time.perf_counter()
        journal.record(outcomes, distances)
        checked += len(distances)
        tick = time.perf_counter()
        model += t1 - t0
        checking += t_check - t1
        drawing += t2 - t_check
        committing += tick - t2
        done += batch.n_vertebrae
        drawn += n_drawn
        emit(ScanEvent("batch", advance=sum(len(o.vertebrae) for o in outcomes)))
    return ClassifyStats(
        done, len(batches), drawn, wait, model, maps, drawing, committing, checking, checked
    )


def _image_distances(batch: CropBatch, localizer: Localizer) -> dict[str, float]:
    """The localizer guard's distance of each image of ``batch`` that came with its canvas (one
    forward pass up to the guard's stages for the whole batch), keyed by image."""
    measured = [item for item in batch.images if item.canvas is not None]
    if not measured or localizer.guard is None:
        return {}
    canvases = torch.cat([item.canvas for item in measured if item.canvas is not None])
    before = torch.get_num_threads()
    # One thread: the network is small and the batch a few canvases, and its threads would wait
    # on each other while the loader's workers hold a core (96 images on the 2-core machine,
    # under other load: 2.5 ms of CPU per image on one thread, 59 ms on two).
    torch.set_num_threads(1)
    try:
        found = image_distances(localizer.net, canvases, localizer.guard)
    finally:
        torch.set_num_threads(before)
    return {item.image: float(d) for item, d in zip(measured, found, strict=True)}


def _outcomes(
    batch: CropBatch,
    prediction: Prediction | None,
    threshold: float,
    heatmaps: HeatmapMode,
    run_dir: Path,
) -> tuple[list[ImageOutcome], int]:
    """Turn one batch's predictions into journal rows, drawing the overlays asked for."""
    outcomes: list[ImageOutcome] = []
    drawn = 0
    offset = 0
    for item in batch.images:
        failures = [
            VertebraOutcome(box.row, box.level, None, "", reason) for box, reason in item.box_errors
        ]
        if item.error:
            outcomes.append(ImageOutcome(item.image, "failed", item.error, tuple(failures)))
            continue
        rows: list[VertebraOutcome] = []
        for k, box in enumerate(item.boxes):
            index = offset + k
            assert prediction is not None  # an image with crops implies a non-empty batch
            p = float(prediction.probs[index])
            if not math.isfinite(p):  # a damaged bundle or input: an error row, never a blank
                rows.append(VertebraOutcome(box.row, box.level, None, "", NON_FINITE))
                continue
            heatmap = ""
            wanted = heatmaps is HeatmapMode.ALL or (
                heatmaps is HeatmapMode.POSITIVE and is_positive(p, threshold)
            )
            if wanted and prediction.cams is not None:
                heatmap = f"{HEATMAP_DIR}/{thumbnail_name(item.image, box.level.value)}"
                overlay = heatmap_overlay(
                    np.asarray(batch.thumbs[index].numpy()), prediction.cams[index]
                )
                save_jpeg(overlay, run_dir / heatmap)
                # the values themselves too, for outputs that need more than the colours
                save_heatmap_values(prediction.cams[index], heatmap_values_path(run_dir / heatmap))
                drawn += 1
            distance = None if prediction.distances is None else float(prediction.distances[index])
            rows.append(VertebraOutcome(box.row, box.level, p, heatmap, "", distance))
        offset += len(item.boxes)
        ordered = tuple(sorted(rows + failures, key=lambda v: v.box_row))
        if item.preview is not None and any(is_positive(v.probability, threshold) for v in ordered):
            # Positive images are in the flagged queue: draw their radiograph thumbnail now,
            # from the preview the worker made, instead of decoding the image again later.
            save_jpeg(
                draw_boxes(
                    item.preview.numpy(),
                    radiograph_boxes(
                        item.boxes + tuple(b for b, _ in item.box_errors), ordered, threshold
                    ),
                    item.preview_scale,
                ),
                run_dir / RADIOGRAPH_DIR / thumbnail_name(item.image),
            )
        outcomes.append(ImageOutcome(item.image, "classified", "", ordered))
    return outcomes, drawn


def radiograph_boxes(
    boxes: Sequence[VertebraBox], outcomes: Sequence[VertebraOutcome], threshold: float
) -> list[DrawnBox]:
    """The boxes to draw on a radiograph thumbnail, labelled with level and probability."""
    probabilities = {v.box_row: v.probability for v in outcomes}
    drawn = []
    for box in sorted(boxes, key=lambda b: b.row):
        p = probabilities.get(box.row)
        text = box.level.value if p is None else f"{box.level.value} {p:.2f}"
        drawn.append(DrawnBox(box.xyxy, text, is_positive(p, threshold)))
    return drawn
