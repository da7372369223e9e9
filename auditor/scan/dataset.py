"""Loading vertebra crops in DataLoader worker processes.

:class:`VertebraCropDataset` has one item per image: it decodes the radiograph once (the project's
single reader, :func:`auditor.io.radiograph.read_radiograph`), cuts every box of that image
(:func:`auditor.crops.crop_vertebra`, the geometry ``train`` uses), and returns the model-ready
tensor together with small greyscale copies of the crops for heatmap overlays. :func:`pack_batches`
groups whole images into batches of about ``batch_size`` vertebrae, and :func:`collate` concatenates
them, so a batch is the unit both of inference and of the journal's commits.

Without a box file the localizer (:mod:`auditor.scan.locate`) has already decoded every image
once. ``scan`` then cuts the crops from that decode (:func:`write_precut`, into
``RUN_DIR/precut/``) and the loader reads them back instead of decoding the image a second time;
an image whose stored crops do not match its boxes exactly (or whose file is missing or
unreadable) is decoded as before.

With a box file the image check (:mod:`auditor.scan.image_check`) rides on the loader's decode:
given the localizer's working size, the dataset also letterboxes each image it decodes onto the
localizer network's small input canvas (:func:`auditor.localizer.infer.network_inputs`, as the
localizer does), and only that canvas travels back with the crops, for the scanning process to
run the localizer guard's network on.

A file that fails to decode, or a box that cannot be cut, becomes a reason in the batch; it never
stops the loader.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from auditor.crops import crop_vertebra
from auditor.errors import READ_FAILURES
from auditor.files import atomic_path
from auditor.io.radiograph import read_radiograph
from auditor.localizer.infer import network_inputs
from auditor.model.bundle import ModelCard
from auditor.model.infer import preprocess_crops
from auditor.records import VertebraBox
from auditor.reports.thumbnails import downscale_radiograph

logger = logging.getLogger(__name__)

#: Side of the greyscale crop copies kept for heatmap overlay thumbnails.
THUMB_SIZE = 128
#: Longest side of the downscaled radiograph kept for the reports' thumbnails.
PREVIEW_SIDE = 640
#: Folder of RUN_DIR for crops cut from an earlier decode (removed when the scan completes).
PRECUT_DIR = "precut"


@dataclass(frozen=True)
class ImageJob:
    """One candidate image and its validated boxes (cranial to caudal)."""

    image: str  # archive-relative POSIX path
    path: Path
    boxes: tuple[VertebraBox, ...]
    precut: Path | None = None  # crops already cut from an earlier decode (write_precut)


@dataclass(frozen=True)
class ImageCrops:
    """What a worker returns for one image."""

    image: str
    crops: torch.Tensor  # (n, 3, S, S) float32, normalised
    thumbs: torch.Tensor  # (n, T, T) uint8 greyscale crops
    boxes: tuple[VertebraBox, ...]  # the boxes that were cut, in crop order
    box_errors: tuple[tuple[VertebraBox, str], ...]
    error: str = ""  # set when the image itself could not be read
    preview: torch.Tensor | None = None  # (h, w) uint8 downscaled radiograph for the reports
    preview_scale: float = 1.0  # preview pixels per stored pixel
    # (1, 1, S, S) float32: the localizer network's input for the image check (None: not asked
    # for, or the image was not decoded here)
    canvas: torch.Tensor | None = None


@dataclass(frozen=True)
class CropBatch:
    """Several whole images' crops, concatenated; the unit of inference and of journal commits."""

    images: tuple[ImageCrops, ...]
    crops: torch.Tensor
    thumbs: torch.Tensor

    def pin_memory(self) -> CropBatch:
        """Page-lock the tensors (called by the DataLoader when ``pin_memory=True``)."""
        return CropBatch(self.images, self.crops.pin_memory(), self.thumbs)

    @property
    def n_vertebrae(self) -> int:
        return int(self.crops.shape[0])


class VertebraCropDataset(Dataset[ImageCrops]):
    """One item per image: all of its vertebra crops, ready for the classifier.

    Parameters
    ----------
    jobs
        Images to read, with their boxes.
    card
        The model card (input size, crop margin, normalisation).
    thumb_size
        Side of the greyscale crop copies kept for overlays.
    canvas_size
        The localizer's working size, to return each decoded image's canvas for the image check
        too (None: no canvas).
    """

    def __init__(
        self,
        jobs: Sequence[ImageJob],
        card: ModelCard,
        thumb_size: int = THUMB_SIZE,
        canvas_size: int | None = None,
    ) -> None:
        self.jobs = tuple(jobs)
        self.card = card
        self.thumb_size = thumb_size
        self.canvas_size = canvas_size

    def __len__(self) -> int:
        return len(self.jobs)

    def failed(self, index: int, message: str) -> ImageCrops:
        """Image ``index`` as an error: no crops, each box an error with ``message``."""
        job = self.jobs[index]
        failed = _empty(job, self.card.input_size, self.thumb_size, message)
        return ImageCrops(
            job.image,
            failed.crops,
            failed.thumbs,
            (),
            tuple((b, message) for b in job.boxes),
            message,
        )

    def __getitem__(self, index: int) -> ImageCrops:
        job = self.jobs[index]
        size = self.card.input_size
        stored = read_precut(job, self.card)
        if stored is not None:
            return self._image_crops(job, stored[0], job.boxes, (), stored[1], stored[2])
        try:
            pixels = read_radiograph(job.path).pixels
        except READ_FAILURES as err:
            logger.info("cannot decode %s: %s", job.image, err)
            reason = err.reason if hasattr(err, "reason") else str(err)
            return self.failed(index, f"cannot decode the image: {reason}")
        # the image check's input, from this decode: a 192 px canvas crosses back, not the image
        canvas = None if self.canvas_size is None else network_inputs([pixels], self.canvas_size)[0]
        crops: list[np.ndarray] = []
        cut: list[VertebraBox] = []
        box_errors: list[tuple[VertebraBox, str]] = []
        for box in job.boxes:
            try:
                crops.append(crop_vertebra(pixels, box.xyxy, self.card.crop_margin, size))
                cut.append(box)
            except ValueError as err:
                box_errors.append((box, f"cannot cut the crop: {err}"))
        if not crops:
            empty = _empty(job, size, self.thumb_size, "")
            return ImageCrops(
                job.image, empty.crops, empty.thumbs, (), tuple(box_errors), canvas=canvas
            )
        # The downscaled radiograph comes from the decode done here, so the reports never decode
        # an image a second time for its thumbnail.
        preview = downscale_radiograph(pixels, PREVIEW_SIDE)
        scale = preview.shape[1] / pixels.shape[1]
        return self._image_crops(job, crops, cut, box_errors, preview, scale, canvas)

    def _image_crops(
        self,
        job: ImageJob,
        crops: Sequence[np.ndarray],
        cut: Sequence[VertebraBox],
        box_errors: Sequence[tuple[VertebraBox, str]],
        preview: np.ndarray,
        preview_scale: float,
        canvas: torch.Tensor | None = None,
    ) -> ImageCrops:
        thumbs = np.stack([_thumb(crop, self.thumb_size) for crop in crops])
        return ImageCrops(
            image=job.image,
            crops=preprocess_crops(np.stack(crops), self.card),
            thumbs=torch.from_numpy(thumbs),
            boxes=tuple(cut),
            box_errors=tuple(box_errors),
            preview=torch.from_numpy(np.ascontiguousarray(preview)),
            preview_scale=preview_scale,
            canvas=canvas,
        )


def precut_path(run_dir: Path, image: str) -> Path:
    """Where :func:`write_precut` keeps the crops of ``image`` (named by a hash of its path)."""
    digest = hashlib.sha256(image.encode("utf-8")).hexdigest()[:32]
    return run_dir / PRECUT_DIR / f"{digest}.npz"


def write_precut(
    target: Path,
    pixels: np.ndarray,
    boxes: Sequence[tuple[str, tuple[float, float, float, float]]],
    card: ModelCard,
) -> int:
    """Cut the classifier's crops of ``boxes`` (level, xyxy) and the report preview from an
    already decoded radiograph, and store them for :class:`VertebraCropDataset`: all the loader
    needs to classify the image and the reports need to show it, so a streamed scan lets the
    image's file go once they are stored.

    A box that cannot be cut is left out; the loader then decodes that image itself and reports
    the box with its reason. The file is written atomically and holds plain arrays only (read
    back with ``allow_pickle=False``).

    Returns
    -------
    int
        How many of ``boxes`` were stored.
    """
    levels: list[str] = []
    coords: list[tuple[float, float, float, float]] = []
    crops: list[np.ndarray] = []
    for level, xyxy in boxes:
        try:
            crops.append(crop_vertebra(pixels, xyxy, card.crop_margin, card.input_size))
        except ValueError:
            continue
        levels.append(level)
        coords.append(xyxy)
    size = card.input_size
    preview = downscale_radiograph(pixels, PREVIEW_SIDE)
    with atomic_path(target) as partial, partial.open("wb") as handle:
        np.savez(
            handle,
            levels=np.array(levels, dtype=np.str_),
            xyxy=np.array(coords, dtype=np.float64).reshape(-1, 4),
            crops=np.stack(crops) if crops else np.zeros((0, size, size), np.float32),
            preview=preview,
            preview_scale=np.float64(preview.shape[1] / pixels.shape[1]),
            input_size=np.int64(size),
            crop_margin=np.float64(card.crop_margin),
        )
    return len(crops)


def read_precut(
    job: ImageJob, card: ModelCard
) -> tuple[list[np.ndarray], np.ndarray, float] | None:
    """The stored crops of ``job``'s boxes in box order, its preview and preview scale; None when
    there is no usable file or any box is not among the stored ones (the caller decodes)."""
    if job.precut is None or not job.precut.is_file():
        return None
    try:
        with np.load(job.precut, allow_pickle=False) as data:
            if int(data["input_size"]) != card.input_size:
                return None
            if float(data["crop_margin"]) != card.crop_margin:
                return None
            levels = [str(level) for level in data["levels"]]
            coords = np.asarray(data["xyxy"], dtype=np.float64)
            stored = np.asarray(data["crops"], dtype=np.float32)
            preview = np.asarray(data["preview"])
            scale = float(data["preview_scale"])
    except (OSError, ValueError, KeyError) as err:
        logger.info("ignoring the stored crops of %s: %s", job.image, err)
        return None
    crops: list[np.ndarray] = []
    for box in job.boxes:
        found = [
            i
            for i, level in enumerate(levels)
            if level == box.level.value and np.array_equal(coords[i], box.xyxy)
        ]
        if not found:
            return None
        crops.append(stored[found[0]])
    return crops, preview, scale


def _thumb(crop: np.ndarray, size: int) -> np.ndarray:
    grey = Image.fromarray(np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8), mode="L")
    if grey.size != (size, size):
        grey = grey.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.uint8)


def _empty(job: ImageJob, size: int, thumb_size: int, error: str) -> ImageCrops:
    return ImageCrops(
        image=job.image,
        crops=torch.zeros((0, 3, size, size), dtype=torch.float32),
        thumbs=torch.zeros((0, thumb_size, thumb_size), dtype=torch.uint8),
        boxes=(),
        box_errors=(),
        error=error,
    )


def collate(items: Sequence[ImageCrops]) -> CropBatch:
    """Concatenate the crops of several images into one batch (runs in the worker)."""
    return CropBatch(
        images=tuple(items),
        crops=torch.cat([item.crops for item in items]),
        thumbs=torch.cat([item.thumbs for item in items]),
    )


class CropBatches(Dataset[CropBatch]):
    """Item ``k`` is batch ``k`` of ``batches`` (indices into ``jobs``): those images read, cut
    and collated in one go, the unit an :class:`~auditor.parallel.Executor` hands a worker;
    with ``canvas_size``, each image's canvas for the image check too
    (:class:`VertebraCropDataset`)."""

    def __init__(
        self,
        jobs: Sequence[ImageJob],
        batches: Sequence[Sequence[int]],
        card: ModelCard,
        canvas_size: int | None = None,
    ) -> None:
        self.images = VertebraCropDataset(jobs, card, canvas_size=canvas_size)
        self.batches = [list(batch) for batch in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> CropBatch:
        return collate([self.images[i] for i in self.batches[index]])

    def lost(self, index: int, reason: str) -> CropBatch:
        """Batch ``index`` when the worker cutting it died: every image an error row."""
        return collate([self.images.failed(i, reason) for i in self.batches[index]])


def pack_batches(jobs: Sequence[ImageJob], batch_size: int) -> list[list[int]]:
    """Group consecutive images into batches of at most ``batch_size`` vertebrae.

    Images are never split across batches (an image's results are committed together); an image
    with more boxes than ``batch_size`` gets a batch of its own. The packing depends only on the
    job list and ``batch_size``, so a resumed run cuts the same batches as an uninterrupted one.

    Returns
    -------
    list of list of int
        Indices into ``jobs``, one list per batch (for the DataLoader's ``batch_sampler``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches: list[list[int]] = []
    current: list[int] = []
    count = 0
    for index, job in enumerate(jobs):
        n = len(job.boxes)
        if current and count + n > batch_size:
            batches.append(current)
            current, count = [], 0
        current.append(index)
        count += n
    if current:
        batches.append(current)
    return batches
