"""Labelled vertebra crops for training and evaluation, decoded once per run.

:func:`load_crop_set` reads an annotation file (any box-file format, with labels), checks every row
against the archive with :func:`auditor.boxes.resolve_boxes`, decodes each radiograph exactly once
and cuts all its vertebrae at the model's input size. The crops are kept in memory (a few hundred
to a few thousand crops of 128-512 px fit easily), so epochs only pay for augmentation.
Rows that cannot be used (no label, unknown image, unreadable file, box outside the image) are
counted with a reason, never dropped silently and never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.path import Path as PolygonPath
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from auditor.boxes import archive_key, read_box_file, resolve_boxes
from auditor.crops import crop_vertebra, crop_window, normalise_crops
from auditor.errors import READ_FAILURES, InputFileError, ReadError, read_failure_reason
from auditor.io.radiograph import read_header, read_radiograph
from auditor.parallel import map_in_order
from auditor.records import RadiographMeta, RowError, VertebraBox

logger = logging.getLogger(__name__)

Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class CropRecord:
    """What is known about one labelled crop (everything but its pixels)."""

    image: str
    level: str
    box: tuple[float, float, float, float]
    label: int
    ao_type: str = ""
    genant_grade: int | None = None
    patient_id: str = ""
    study_uid: str = ""
    group: str = ""
    fracture_zone: npt.NDArray[np.float64] | None = field(default=None, compare=False)
    """Fracture-zone polygon (K, 2) ``[x, y]`` in crop pixels, when ground truth has one."""
    variant_zones: tuple[npt.NDArray[np.float64], ...] = field(default=(), compare=False)
    """The same zone in each jittered-box variant's crop pixels (:attr:`CropSet.variants`)."""


@dataclass(frozen=True)
class CropSet:
    """Crops (N, S, S) float32 in [0, 1] with their records and the rows that were skipped."""

    crops: npt.NDArray[np.float32]
    records: tuple[CropRecord, ...]
    skipped: tuple[RowError, ...]
    input_size: int
    margin: float
    n_images: int
    variants: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    """Optional (N, K, S, S) extra crops of each vertebra cut from jittered boxes (training only:
    they stand in for the box errors of a localizer or a hurried annotator)."""

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def groups(self) -> npt.NDArray[np.str_]:
        return np.array([r.group for r in self.records])

    def subset(self, index: Sequence[int] | npt.NDArray[np.integer[Any]]) -> CropSet:
        """The crops at ``index`` (skipped rows are kept once, with the whole set)."""
        idx = np.asarray(index, dtype=np.int64)
        return CropSet(
            crops=self.crops[idx],
            records=tuple(self.records[i] for i in idx),
            skipped=self.skipped,
            input_size=self.input_size,
            margin=self.margin,
            n_images=len({self.records[i].image for i in idx}),
            variants=None if self.variants is None else self.variants[idx],
        )

    def summary(self) -> dict[str, Any]:
        """Counts by class, level and AO type, plus patients/groups, images and skipped rows."""
        labels = Counter("fracture" if r.label else "no_fracture" for r in self.records)
        return {
            "n_crops": len(self.records),
            "n_images": self.n_images,
            "n_groups": len({r.group for r in self.records}),
            "by_class": dict(sorted(labels.items())),
            "by_level": _count(r.level for r in self.records),
            "fractures_by_level": _count(r.level for r in self.records if r.label),
            "fractures_by_ao_type": _count(r.ao_type or "unknown" for r in self.records if r.label),
            "fractures_by_genant_grade": _count(
                str(r.genant_grade) if r.genant_grade is not None else "unknown"
                for r in self.records
                if r.label
            ),
            "n_skipped_rows": len(self.skipped),
        }


def _count(values: Any) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _read_zones(path: Path) -> dict[tuple[str, str], Polygon]:
    """Fracture-zone polygons keyed by (archive key or SOP UID, level) from a CSV or COCO file.

    CSV: a ``fracture_zone`` column holding a JSON list of ``[x, y]`` points. COCO: each
    annotation's ``segmentation`` (first polygon). Files without zones give an empty dict.
    """
    zones: dict[tuple[str, str], Polygon] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            images = {img["id"]: img for img in data.get("images", [])}
            cats = {c["id"]: str(c["name"]).upper() for c in data.get("categories", [])}
            for ann in data.get("annotations", []):
                seg = ann.get("segmentation")
                if not seg or not isinstance(seg, list):
                    continue
                flat = seg[0] if isinstance(seg[0], list) else seg
                pts = tuple(
                    (float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)
                )
                img = images.get(ann.get("image_id"), {})
                key = archive_key(str(img.get("file_name", ""))) or str(img.get("sop_instance_uid"))
                level = cats.get(ann.get("category_id"), "")
                if len(pts) >= 3:
                    zones[(key, level)] = pts
            return zones
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                return zones
            reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
            if "fracture_zone" not in reader.fieldnames:
                return zones
            for row in reader:
                text = (row.get("fracture_zone") or "").strip()
                if not text:
                    continue
                pts = tuple((float(x), float(y)) for x, y in json.loads(text))
                key = archive_key(row.get("image") or "") or (row.get("sop_instance_uid") or "")
                level = (row.get("level") or "").strip().upper()
                if len(pts) >= 3:
                    zones[(key, level)] = pts
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise InputFileError(f"{path}: cannot read fracture zones: {err}") from err
    return zones


def _index_archive_headers(
    archive: Path, boxes: Sequence[VertebraBox]
) -> tuple[dict[str, RadiographMeta], list[RowError]]:
    """Headers of the images the rows name (all archive files when some rows give only a UID)."""
    images: dict[str, RadiographMeta] = {}
    errors: list[RowError] = []
    root = archive.resolve()
    keys = {k for b in boxes if b.image and (k := archive_key(b.image))}
    if any(not b.image for b in boxes):
        keys |= {p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file()}
    unreadable: dict[str, str] = {}
    for key in sorted(keys):
        path = archive / key
        if not path.resolve().is_relative_to(root) or not path.is_file():
            continue  # resolve_boxes reports the rows naming it
        try:
            images[key] = read_header(path)
        except ReadError as err:
            unreadable[key] = err.reason
    for box in boxes:
        name = archive_key(box.image) if box.image else None
        if name is not None and name in unreadable:
            errors.append(
                RowError(
                    box.row, f"unreadable image: {unreadable[name]}", box.image, box.level.value
                )
            )
    return images, errors


Box = tuple[float, float, float, float]
#: One vertebra cut from a decoded image: its crop and its jittered-box variants (None without
#: jitter), or why it could not be cut.
CutOutcome = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None] | str


@dataclass(frozen=True)
class _CutJob:
    """One radiograph to decode and the vertebrae to cut from it (boxes drawn beforehand)."""

    key: str
    boxes: tuple[Box, ...]
    jittered: tuple[tuple[Box, ...], ...]
    """Per box, the jittered boxes of its variants (empty without jitter)."""


class _Cutter(Dataset[list[CutOutcome] | str]):
    """Decodes one job's radiograph per item and cuts its crops, or says why it cannot be read.

    The boxes and their jitter are fixed before any worker starts, so the crops do not depend on
    how many processes cut them or in which order.
    """

    def __init__(self, archive: Path, jobs: Sequence[_CutJob], margin: float, size: int) -> None:
        self.archive, self.jobs, self.margin, self.size = archive, tuple(jobs), margin, size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> list[CutOutcome] | str:
        job = self.jobs[index]
        try:
            pixels = read_radiograph(self.archive / job.key).pixels
        except READ_FAILURES as err:  # a file gone since its header was read, a decoder failing
            return read_failure_reason(err)
        outcomes: list[CutOutcome] = []
        for box, jittered in zip(job.boxes, job.jittered, strict=True):
            try:
                crop = crop_vertebra(pixels, box, self.margin, self.size)
                extra = (
                    np.stack([crop_vertebra(pixels, jb, self.margin, self.size) for jb in jittered])
                    if jittered
                    else None
                )
            except ValueError as err:
                outcomes.append(str(err))
                continue
            outcomes.append((crop, extra))
        return outcomes


def load_crop_set(
    archive: Path,
    annotations: Path,
    input_size: int,
    margin: float,
    ground_truth: Path | None = None,
    require_labels: bool = True,
    on_image: Callable[[int, int], None] | None = None,
    box_jitter: float = 0.0,
    jitter_copies: int = 0,
    seed: int = 0,
    workers: int = 0,
) -> CropSet:
    """Read annotations, check them against the archive, and cut every labelled vertebra once.

    Parameters
    ----------
    archive
        Archive root; annotation image paths are relative to it.
    annotations
        Box file (CSV or COCO JSON) with a ``label`` per vertebra.
    input_size, margin
        Crop side in pixels and context margin (see :func:`auditor.crops.crop_vertebra`).
    ground_truth
        Optional file with ``fracture_zone`` polygons (synthetic world ``ground_truth.csv``); the
        annotation file itself is searched too.
    require_labels
        Rows without a label are skipped (with a reason) when True.
    on_image
        Progress callback ``(images_done, images_total)``.
    box_jitter, jitter_copies, seed
        Also cut ``jitter_copies`` crops per vertebra from boxes whose four edges are each moved
        by up to ``box_jitter`` of the box's width (x) or height (y), drawn from ``seed``; they go
        to :attr:`CropSet.variants`, and each fracture zone is mapped into their windows too
        (:attr:`CropRecord.variant_zones`). 0 copies (the default) cuts none. The jittered
        boxes are drawn for every resolved row in file order, before any image is decoded.
    workers
        Processes that decode and cut the images (0: this process). The result is the same for
        any number.

    Returns
    -------
    CropSet

    Raises
    ------
    InputFileError
        When the archive or annotation file is missing or unreadable as a whole, or no usable
        labelled vertebra remains.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise InputFileError(f"archive {archive} is not a folder")
    box_file = read_box_file(Path(annotations))
    skipped: list[RowError] = list(box_file.errors)
    usable = []
    for box in box_file.rows:
        if box.label is None and require_labels:
            skipped.append(
                RowError(box.row, "no label (fracture / no_fracture)", box.image, box.level)
            )
        else:
            usable.append(box)
    headers, header_errors = _index_archive_headers(archive, usable)
    skipped.extend(header_errors)
    bad_rows = {e.row for e in header_errors}
    resolved = resolve_boxes([b for b in usable if b.row not in bad_rows], headers)
    skipped.extend(resolved.errors)

    zones: dict[tuple[str, str], Polygon] = {}
    for source in (Path(annotations), ground_truth):
        if source is not None:
            zones.update(_read_zones(Path(source)))
    uid_of = {key: meta.sop_uid for key, meta in headers.items()}

    rng = np.random.default_rng(seed)
    copies = jitter_copies if box_jitter > 0 else 0
    jobs = [
        _CutJob(
            key,
            tuple(b.xyxy for b in boxes),
            tuple(tuple(jitter_box(b.xyxy, box_jitter, rng) for _ in range(copies)) for b in boxes),
        )
        for key, boxes in resolved.by_image.items()
    ]
    crops: list[npt.NDArray[np.float32]] = []
    variants: list[npt.NDArray[np.float32]] = []
    records: list[CropRecord] = []
    total = len(jobs)
    n_images = 0
    cut = map_in_order(_Cutter(archive, jobs, margin, input_size), total, workers)
    for done, (job, boxes, result) in enumerate(
        zip(jobs, resolved.by_image.values(), cut, strict=True), start=1
    ):
        if isinstance(result, str):
            for box in boxes:
                skipped.append(
                    RowError(box.row, f"unreadable image: {result}", job.key, box.level.value)
                )
            continue
        n_images += 1
        for box, jittered, outcome in zip(boxes, job.jittered, result, strict=True):
            level = box.level.value
            if isinstance(outcome, str):
                skipped.append(RowError(box.row, outcome, job.key, level))
                continue
            crop, extra = outcome
            zone = zones.get((job.key, level)) or zones.get((uid_of.get(job.key, ""), level))
            zone_crop = crop_window(box.xyxy, margin, input_size).to_crop(zone) if zone else None
            crops.append(crop)
            if extra is not None:
                variants.append(extra)
            variant_zones = (
                tuple(crop_window(jb, margin, input_size).to_crop(zone) for jb in jittered)
                if zone
                else ()
            )
            records.append(
                CropRecord(
                    image=job.key,
                    level=level,
                    box=box.xyxy,
                    label=int(box.label) if box.label is not None else -1,
                    ao_type=box.ao_type,
                    genant_grade=box.genant_grade,
                    patient_id=box.patient_id,
                    study_uid=box.study_uid,
                    group=box.patient_id or box.study_uid or uid_of.get(job.key, "") or job.key,
                    fracture_zone=zone_crop,
                    variant_zones=variant_zones,
                )
            )
        if on_image is not None:
            on_image(done, total)
    if not records:
        reasons = "; ".join(str(e) for e in skipped[:3])
        raise InputFileError(
            f"{annotations}: no usable labelled vertebra in archive {archive}"
            + (f" ({len(skipped)} rows skipped, e.g. {reasons})" if skipped else "")
        )
    logger.info(
        "cut %d crops from %d images (%d rows skipped)", len(records), n_images, len(skipped)
    )
    return CropSet(
        crops=np.stack(crops).astype(np.float32, copy=False),
        records=tuple(records),
        skipped=tuple(sorted(skipped, key=lambda e: e.row)),
        input_size=input_size,
        margin=margin,
        n_images=n_images,
        variants=np.stack(variants).astype(np.float32, copy=False) if variants else None,
    )


def jitter_box(
    box: tuple[float, float, float, float], amount: float, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Move each edge of ``box`` by up to ``amount`` of its width (x) or height (y).

    The result keeps at least a quarter of the original width and height.
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx0, dy0, dx1, dy1 = rng.uniform(-amount, amount, 4)
    nx0, nx1 = x0 + dx0 * w, x1 + dx1 * w
    ny0, ny1 = y0 + dy0 * h, y1 + dy1 * h
    if nx1 - nx0 < 0.25 * w:
        nx0, nx1 = x0, x1
    if ny1 - ny0 < 0.25 * h:
        ny0, ny1 = y0, y1
    return (float(nx0), float(ny0), float(nx1), float(ny1))


@dataclass(frozen=True)
class AugmentConfig:
    """Random rotation (degrees), horizontal flip probability and shift (fraction of the side)."""

    rotation: float = 10.0
    flip: float = 0.5
    shift: float = 0.1

    @property
    def enabled(self) -> bool:
        return self.rotation > 0 or self.flip > 0 or self.shift > 0


def zone_mask(zone: npt.ArrayLike, size: int) -> npt.NDArray[np.bool_]:
    """(size, size) mask of the crop pixels whose centre lies in the (K, 2) ``[x, y]`` polygon.

    Pixel (row r, column c) covers [c, c+1) x [r, r+1), as in
    :func:`auditor.training.evaluate.peak_in_zone`.
    """
    rows, cols = np.mgrid[0:size, 0:size]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    inside = PolygonPath(np.asarray(zone, dtype=np.float64)).contains_points(centres)
    return inside.reshape(size, size)


CropItem = tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]


class CropDataset(Dataset[CropItem]):
    """Crops as normalised 3-channel tensors, with the study's augmentation when training.

    Augmentation (rotation, horizontal flip, shift) acts on the cached greyscale crop, so no image
    is decoded again; the area a rotation or shift uncovers is filled with 0 like crop padding.
    With ``variants`` (crops from jittered boxes, :func:`load_crop_set`) and augmentation on, each
    draw picks the original crop or one of its variants at random.

    With ``zones`` (one sequence per crop: the fracture-zone polygon of the crop and of each of
    its variants, empty when it has none), each item also carries the zone as a (1, S, S) float
    mask that went through the same variant pick, flip, rotation and shift as the crop (all zero
    for a crop without a zone); ``tlaudit train --zone-loss`` uses it.
    """

    def __init__(
        self,
        crops: npt.NDArray[np.float32],
        labels: npt.NDArray[np.int64],
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentConfig | None = None,
        crop_normalisation: str = "none",
        variants: npt.NDArray[np.float32] | None = None,
        zones: Sequence[Sequence[npt.NDArray[np.float64]]] | None = None,
    ) -> None:
        size = int(np.shape(crops)[-1])
        self.zone_masks: dict[int, torch.Tensor] | None = None
        if zones is not None:
            if len(zones) != len(labels):
                raise ValueError(f"{len(zones)} zone entries for {len(labels)} crops")
            per_crop = 1 + (0 if variants is None else int(np.shape(variants)[1]))
            if any(len(polygons) not in (0, per_crop) for polygons in zones):
                raise ValueError(
                    f"each crop needs no zone or {per_crop} (the crop's and its variants')"
                )
            self.zone_masks = {
                i: torch.from_numpy(np.stack([zone_mask(z, size) for z in polygons]))
                for i, polygons in enumerate(zones)
                if len(polygons)
            }
            self.empty_mask = torch.zeros((1, size, size), dtype=torch.float32)
        crops = normalise_crops(np.asarray(crops, dtype=np.float32), crop_normalisation)
        self.crops = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
        self.variants: torch.Tensor | None = None
        if variants is not None and augment is not None and augment.enabled:
            n, k, size = variants.shape[0], variants.shape[1], variants.shape[-1]
            flat = normalise_crops(
                np.asarray(variants, dtype=np.float32).reshape(n * k, size, size),
                crop_normalisation,
            )
            self.variants = torch.from_numpy(np.ascontiguousarray(flat.reshape(n, k, size, size)))
        self.labels = [int(v) for v in labels]
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)
        steps: list[Any] = []
        if augment is not None and augment.enabled:
            if augment.flip > 0:
                steps.append(v2.RandomHorizontalFlip(p=augment.flip))
            if augment.rotation > 0 or augment.shift > 0:
                steps.append(
                    v2.RandomAffine(
                        degrees=augment.rotation,
                        translate=(augment.shift, augment.shift),
                        interpolation=v2.InterpolationMode.BILINEAR,
                        fill=0.0,
                    )
                )
        self.transform = v2.Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> CropItem:
        x = self.crops[index][None]
        pick = 0
        if self.variants is not None:
            pick = int(torch.randint(0, self.variants.shape[1] + 1, ()))
            if pick:
                x = self.variants[index, pick - 1][None]
        if self.zone_masks is None:
            if self.transform is not None:
                x = self.transform(x)
            return (x.expand(3, -1, -1) - self.mean) / self.std, self.labels[index]
        masks = self.zone_masks.get(index)
        mask = self.empty_mask if masks is None else masks[pick][None].float()
        if self.transform is not None:
            x, mask = self.transform(tv_tensors.Image(x), tv_tensors.Mask(mask))
        x = (x.expand(3, -1, -1) - self.mean) / self.std
        return x.as_subclass(torch.Tensor), self.labels[index], mask.as_subclass(torch.Tensor)
