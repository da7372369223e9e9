"""Vertebra box files: reading, validating and matching rows to archive images.

A box file gives one box per vertebral body. ``scan --boxes`` reads it, and ``train`` / ``evaluate``
read the same formats as annotations (with the optional label columns filled).

CSV format (one row per vertebra; column names are case-insensitive)::

    image, sop_instance_uid, level, x_min, y_min, x_max, y_max,
    [label, ao_type, genant_grade, patient_id, study_uid, source, confidence]

``image`` is the path relative to the archive root (POSIX separators); ``sop_instance_uid`` may be
given instead of, or beside, it. Coordinates are stored-pixel coordinates of the image (x = column,
y = row). ``label`` is ``fracture`` / ``no_fracture`` (also 1/0, yes/no, true/false).
``source`` says where a box came from (``file``, the default, or ``localizer`` for a box file that
``tlaudit localize`` wrote) and ``confidence`` is the localizer's detection score in [0, 1].

COCO JSON format: ``images`` ({id, file_name, width, height, sop_instance_uid?}), ``categories``
({id, name: level}), ``annotations`` ({id, image_id, category_id, bbox: [x, y, w, h],
attributes: {label, ao_type, genant_grade, patient_id, study_uid}}).

Validation happens in two steps, and neither raises for a bad row: :func:`read_box_file` checks
each row on its own (unknown level, non-numeric or degenerate box, bad label) and
:func:`resolve_boxes` checks rows against the archive (unknown image, path escaping the archive,
box outside the image, duplicate level). Every rejected row becomes a
:class:`~auditor.records.RowError` naming the row, so callers can count and report it. Only a file
that cannot be read as a whole (missing, not CSV/JSON, required columns absent) raises
:class:`~auditor.errors.InputFileError`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from auditor.errors import InputFileError
from auditor.files import csv_unsafe
from auditor.records import InputTable, RowError, VertebraBox
from auditor.vocab import Level

#: Tolerance, in pixels, for box edges that overshoot the image border by rounding.
EDGE_TOLERANCE_PX = 1.0
#: Smallest box side accepted, in pixels; anything smaller cannot hold a vertebral body.
MIN_BOX_SIDE_PX = 4.0

_LABELS = {
    "fracture": 1,
    "1": 1,
    "yes": 1,
    "true": 1,
    "positive": 1,
    "no_fracture": 0,
    "no fracture": 0,
    "0": 0,
    "no": 0,
    "false": 0,
    "negative": 0,
}
#: The box's corners, in stored-pixel coordinates (x = column, y = row).
BOX_COORDS = ("x_min", "y_min", "x_max", "y_max")
#: Every column a box file may have, in the order tlaudit writes them: the image (by path or
#: SOP Instance UID), the level, the corners, then the optional columns.
BOX_FILE_COLUMNS = (
    "image",
    "sop_instance_uid",
    "level",
    *BOX_COORDS,
    "label",
    "ao_type",
    "genant_grade",
    "patient_id",
    "study_uid",
    "source",
    "confidence",
)
#: Where a box can come from: a person's box file, or the bundled localizer.
BOX_SOURCES = ("file", "localizer")


#: A box file: the boxes that passed the row checks, and the rows that did not.
BoxFile = InputTable[VertebraBox]


class ImageInfo(Protocol):
    """What :func:`resolve_boxes` needs to know of a candidate image (``RadiographMeta`` fits)."""

    @property
    def sop_uid(self) -> str: ...

    @property
    def rows(self) -> int: ...

    @property
    def columns(self) -> int: ...


@dataclass(frozen=True)
class ResolvedBoxes:
    """Box rows matched to archive images (keyed by archive-relative POSIX path), level-ordered."""

    by_image: dict[str, tuple[VertebraBox, ...]]
    errors: tuple[RowError, ...]

    @property
    def n_boxes(self) -> int:
        return sum(len(boxes) for boxes in self.by_image.values())


class _RowError(ValueError):
    """Raised inside row parsing; becomes a RowError."""


def read_box_file(path: Path) -> BoxFile:
    """Read a CSV or COCO JSON box file and check each row on its own.

    Parameters
    ----------
    path
        ``.csv`` or ``.json`` file.

    Returns
    -------
    BoxFile
        Valid rows as :class:`VertebraBox` and rejected rows as :class:`~auditor.records.RowError`.

    Raises
    ------
    InputFileError
        When the file is missing, of an unknown type, not parseable, or lacks required columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"box file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        boxes, errors = _read_csv(path)
    elif suffix == ".json":
        boxes, errors = _read_coco(path)
    else:
        raise InputFileError(f"box file {path}: expected a .csv or COCO .json file, got {suffix!r}")
    return BoxFile(path=path, rows=tuple(boxes), errors=tuple(errors))


def _read_csv(path: Path) -> tuple[list[VertebraBox], list[RowError]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [name.strip().lower() for name in reader.fieldnames or []]
            missing = [name for name in ("level", *BOX_COORDS) if name not in fields]
            if missing or not {"image", "sop_instance_uid"} & set(fields):
                need = missing or ["image or sop_instance_uid"]
                raise InputFileError(
                    f"box file {path}: missing column(s) {', '.join(need)}; "
                    f"found {', '.join(fields)}"
                )
            reader.fieldnames = fields
            rows = [(number, raw) for number, raw in enumerate(reader, start=1)]
    except UnicodeDecodeError as err:
        raise InputFileError(f"box file {path} is not UTF-8 text") from err
    except csv.Error as err:
        raise InputFileError(f"box file {path} is not valid CSV: {err}") from err

    boxes: list[VertebraBox] = []
    errors: list[RowError] = []
    for number, raw in rows:
        record = {
            key: csv_unsafe((value or "").strip()) for key, value in raw.items() if key is not None
        }
        try:
            boxes.append(_make_box(number, record, {k: record.get(k, "") for k in BOX_COORDS}))
        except _RowError as err:
            errors.append(
                RowError(number, str(err), record.get("image", ""), record.get("level", ""))
            )
    return boxes, errors


def _read_coco(path: Path) -> tuple[list[VertebraBox], list[RowError]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(f"box file {path} is not valid JSON: {err}") from err
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise InputFileError(f"box file {path}: not a COCO file (no 'annotations' list)")
    images = {
        image.get("id"): image for image in document.get("images", []) if isinstance(image, dict)
    }
    categories = {
        category.get("id"): str(category.get("name", ""))
        for category in document.get("categories", [])
        if isinstance(category, dict)
    }

    boxes: list[VertebraBox] = []
    errors: list[RowError] = []
    for number, annotation in enumerate(document["annotations"], start=1):
        try:
            if not isinstance(annotation, dict):
                raise _RowError("annotation is not an object")
            image = images.get(annotation.get("image_id"))
            if image is None:
                raise _RowError(f"image_id {annotation.get('image_id')!r} is not in 'images'")
            bbox = annotation.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise _RowError(f"bbox must be [x, y, width, height], got {bbox!r}")
            x, y, w, h = (_number(value, "bbox") for value in bbox)
            attributes = annotation.get("attributes") or {}
            if not isinstance(attributes, dict):
                raise _RowError("attributes must be an object")
            record = {
                "image": str(image.get("file_name", "")),
                "sop_instance_uid": str(image.get("sop_instance_uid", "")),
                "level": categories.get(annotation.get("category_id"), ""),
                **{key: "" if value is None else str(value) for key, value in attributes.items()},
            }
            coords = {"x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h}
            boxes.append(_make_box(number, record, coords))
        except _RowError as err:
            errors.append(RowError(number, str(err)))
    return boxes, errors


def _number(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _RowError(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise _RowError(f"{name} is not a finite number: {value!r}")
    return number


def degenerate_reason(xyxy: tuple[float, float, float, float]) -> str:
    """Why a box ``(x_min, y_min, x_max, y_max)`` cannot hold a vertebral body, or ``""``.

    The one row check that applies to every box, whether read from a file or found by the
    localizer."""
    x_min, y_min, x_max, y_max = xyxy
    if x_max - x_min < MIN_BOX_SIDE_PX or y_max - y_min < MIN_BOX_SIDE_PX:
        return (
            f"degenerate box ({x_min:g}, {y_min:g})-({x_max:g}, {y_max:g}): each side must be at "
            f"least {MIN_BOX_SIDE_PX:g} px with x_max > x_min and y_max > y_min"
        )
    return ""


def _make_box(row: int, record: Mapping[str, str], coords: Mapping[str, Any]) -> VertebraBox:
    image = record.get("image", "")
    uid = record.get("sop_instance_uid", "")
    if not image and not uid:
        raise _RowError("neither image nor sop_instance_uid is given")
    try:
        level = Level.parse(record.get("level", ""))
    except ValueError as err:
        raise _RowError(str(err)) from None
    x_min, y_min, x_max, y_max = (_number(coords[name], name) for name in BOX_COORDS)
    problem = degenerate_reason((x_min, y_min, x_max, y_max))
    if problem:
        raise _RowError(problem)
    label_text = record.get("label", "").lower()
    if label_text and label_text not in _LABELS:
        raise _RowError(f"label {record['label']!r} is not fracture / no_fracture (or 1 / 0)")
    source = record.get("source", "").lower() or "file"
    if source not in BOX_SOURCES:
        raise _RowError(f"source {record['source']!r} is not one of {', '.join(BOX_SOURCES)}")
    confidence: float | None = None
    if record.get("confidence", ""):
        confidence = _number(record["confidence"], "confidence")
        if not 0.0 <= confidence <= 1.0:
            raise _RowError(f"confidence {record['confidence']!r} is not in 0 to 1")
    grade_text = record.get("genant_grade", "")
    grade: int | None = None
    if grade_text:
        try:
            grade = int(float(grade_text))
        except ValueError:
            raise _RowError(f"genant_grade {grade_text!r} is not a number 0 to 3") from None
        if not 0 <= grade <= 3:
            raise _RowError(f"genant_grade {grade_text!r} is not in 0 to 3")
    return VertebraBox(
        row=row,
        image=image,
        sop_instance_uid=uid,
        level=level,
        x_min=x_min,
        y_min=y_min,
        x_max=x_max,
        y_max=y_max,
        label=_LABELS[label_text] if label_text else None,
        ao_type=record.get("ao_type", "").upper(),
        genant_grade=grade,
        patient_id=record.get("patient_id", ""),
        study_uid=record.get("study_uid", ""),
        source=source,
        confidence=confidence,
    )


def archive_key(image: str) -> str | None:
    """Normalise a box-file image path to an archive-relative POSIX key.

    Returns None when the path is absolute or climbs out of the archive with ``..``, so that no box
    row can make tlaudit read a file outside the archive.
    """
    text = image.replace("\\", "/").strip()
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts: list[str] = []
    for part in PurePosixPath(text).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) or None


def resolve_boxes(boxes: Iterable[VertebraBox], images: Mapping[str, ImageInfo]) -> ResolvedBoxes:
    """Match box rows to the archive's candidate images and check them against each image.

    Parameters
    ----------
    boxes
        Rows from :func:`read_box_file` (or from the localizer).
    images
        Candidate images keyed by archive-relative POSIX path, with their header
        (``sop_uid``, ``rows``, ``columns``), e.g. ``RadiographMeta`` from the inventory.

    Returns
    -------
    ResolvedBoxes
        Boxes per image ordered cranial to caudal, and one :class:`~auditor.records.RowError` per
        rejected row: path outside the archive, unknown image, box outside the image, or a level
        given twice for the same image (the first row is kept).
    """
    by_uid = {info.sop_uid: key for key, info in images.items() if info.sop_uid}
    accepted: dict[str, list[VertebraBox]] = {}
    errors: list[RowError] = []
    for box in boxes:
        name = box.image or box.sop_instance_uid

        def reject(reason: str, box: VertebraBox = box, name: str = name) -> None:
            errors.append(RowError(box.row, reason, name, box.level.value))

        if box.image:
            key = archive_key(box.image)
            if key is None:
                reject(f"image path {box.image!r} points outside the archive")
                continue
            if key not in images:
                reject(f"image {box.image!r} is not a candidate image of this archive")
                continue
        else:
            found = by_uid.get(box.sop_instance_uid)
            if found is None:
                reject(f"SOP Instance UID {box.sop_instance_uid!r} matches no candidate image")
                continue
            key = found
        info = images[key]
        if (
            box.x_min < -EDGE_TOLERANCE_PX
            or box.y_min < -EDGE_TOLERANCE_PX
            or box.x_max > info.columns + EDGE_TOLERANCE_PX
            or box.y_max > info.rows + EDGE_TOLERANCE_PX
        ):
            reject(
                f"box ({box.x_min:g}, {box.y_min:g})-({box.x_max:g}, {box.y_max:g}) lies outside "
                f"the {info.columns} x {info.rows} image"
            )
            continue
        if any(other.level == box.level for other in accepted.get(key, [])):
            reject(f"level {box.level.value} is given twice for this image; the first row is kept")
            continue
        accepted.setdefault(key, []).append(replace(box, image=key))
    ordered = {
        key: tuple(sorted(rows, key=lambda b: b.level.order)) for key, rows in accepted.items()
    }
    return ResolvedBoxes(by_image=dict(sorted(ordered.items())), errors=tuple(errors))
