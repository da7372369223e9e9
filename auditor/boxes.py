"""Vertebra box files: reading, validating and matching rows to archive images.

A box file gives one box per vertebral body. ``scan --boxes`` reads it, and ``train`` / ``evaluate``
read the same formats as annotations (with the optional label columns filled).

CSV format (one row per vertebra; column names are case-insensitive)::

    image, sop_instance_uid, level, x_min, y_min, x_max, y_max,
    [label, ao_type, genant_grade, patient_id, study_uid, source, confidence, reviewer]

``image`` is the path relative to the archive root (POSIX separators); ``sop_instance_uid`` may be
given instead of, or beside, it. Coordinates are stored-pixel coordinates of the image (x = column,
y = row). ``label`` is ``fracture`` / ``no_fracture`` (also 1/0, yes/no, true/false).
``source`` says where a box came from (``file``, the default, or ``localizer`` for a box file that
``tlaudit localize`` wrote) and ``confidence`` is the localizer's detection score in [0, 1].
``reviewer`` names who labelled the row (``tlaudit export-annotations`` fills it); it is read and
ignored, like any other column not listed here.

That is the layout tlaudit writes. It also reads the files annotation tools write: CVAT's
``xtl, ytl, xbr, ybr``, ``xmin..ymax``, ``x, y, w, h`` in pixels, Label Studio's percent
coordinates, semicolon-delimited CSV and COCO with the level as an attribute; which columns
and layouts, and how ``--box-format`` chooses among them, is in :mod:`auditor.box_formats`.

COCO JSON format: ``images`` ({id, file_name, width, height, sop_instance_uid?}), ``categories``
({id, name: level}), ``annotations`` ({id, image_id, category_id, bbox: [x, y, w, h],
attributes: {label, ao_type, genant_grade, patient_id, study_uid, reviewer}}).

Validation happens in two steps, and neither raises for a bad row: :func:`read_box_file` checks
each row on its own (unknown level, non-numeric or degenerate box, bad label) and
:func:`resolve_boxes` checks rows against the archive (unknown image, path escaping the archive,
box outside the image, duplicate level, coordinates that cannot be pixels). Every rejected row
becomes a :class:`~auditor.records.RowError` naming the row, so callers can count and report it.
Only a file that cannot be read as a whole (missing, not CSV/JSON, required columns absent, no
rows at all) raises :class:`~auditor.errors.InputFileError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from auditor.box_formats import RowProblem, number, read_coco_table, read_csv_table
from auditor.errors import InputFileError
from auditor.records import InputTable, RowError, VertebraBox
from auditor.vocab import BoxFormat, Level

#: Tolerance, in pixels, for box edges that overshoot the image border by rounding.
EDGE_TOLERANCE_PX = 1.0
#: Smallest box side accepted, in pixels; anything smaller cannot hold a vertebral body.
MIN_BOX_SIDE_PX = 4.0
#: An image at least this many pixels on its shorter side whose boxes (two or more) all lie
#: inside 0-100 has percent coordinates read as pixels: its vertebrae cannot be that small.
PERCENT_SUSPECT_MIN_SIDE_PX = 500

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
    "reviewer",
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
    notes: tuple[str, ...] = ()  # how rows were matched, where not by their path as given

    @property
    def n_boxes(self) -> int:
        return sum(len(boxes) for boxes in self.by_image.values())


def read_box_file(
    path: Path, box_format: BoxFormat | str = BoxFormat.AUTO, *, allow_empty: bool = False
) -> BoxFile:
    """Read a CSV or COCO JSON box file and check each row on its own.

    Parameters
    ----------
    path
        ``.csv`` or ``.json`` file.
    box_format
        How a CSV file states its boxes (:class:`~auditor.vocab.BoxFormat`); ``auto`` decides
        from the columns (see :mod:`auditor.box_formats`).
    allow_empty
        Accept a file without rows (the localizer's own file, when it found nothing).

    Returns
    -------
    BoxFile
        Valid rows as :class:`VertebraBox` and rejected rows as :class:`~auditor.records.RowError`;
        ``notes`` says how the file was read.

    Raises
    ------
    InputFileError
        When the file is missing, of an unknown type, not parseable, lacks required columns, or
        has no rows (a header alone).
    """
    path = Path(path)
    box_format = BoxFormat(box_format)
    if not path.is_file():
        raise InputFileError(f"box file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = read_csv_table(path, box_format)
    elif suffix == ".json":
        table = read_coco_table(path, box_format)
    else:
        raise InputFileError(f"box file {path}: expected a .csv or COCO .json file, got {suffix!r}")
    if not table.rows and not table.errors and not allow_empty:
        raise InputFileError(
            f"box file {path} has no rows (a header alone); expected one row per vertebra"
        )
    boxes: list[VertebraBox] = []
    errors = list(table.errors)
    for raw in table.rows:
        try:
            boxes.append(_make_box(raw.row, raw.record, raw.coords))
        except RowProblem as err:
            image, level = raw.record.get("image", ""), raw.record.get("level", "")
            errors.append(RowError(raw.row, str(err), image, level))
    errors.sort(key=lambda error: error.row)
    return BoxFile(path=path, rows=tuple(boxes), errors=tuple(errors), notes=(table.layout,))


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
        raise RowProblem("neither image nor sop_instance_uid is given")
    try:
        level = Level.parse(record.get("level", ""))
    except ValueError as err:
        raise RowProblem(str(err)) from None
    x_min, y_min, x_max, y_max = (number(coords[name], name) for name in BOX_COORDS)
    problem = degenerate_reason((x_min, y_min, x_max, y_max))
    if problem:
        raise RowProblem(problem)
    label_text = record.get("label", "").lower()
    if label_text and label_text not in _LABELS:
        raise RowProblem(f"label {record['label']!r} is not fracture / no_fracture (or 1 / 0)")
    source = record.get("source", "").lower() or "file"
    if source not in BOX_SOURCES:
        raise RowProblem(f"source {record['source']!r} is not one of {', '.join(BOX_SOURCES)}")
    confidence: float | None = None
    if record.get("confidence", ""):
        confidence = number(record["confidence"], "confidence")
        if not 0.0 <= confidence <= 1.0:
            raise RowProblem(f"confidence {record['confidence']!r} is not in 0 to 1")
    grade_text = record.get("genant_grade", "")
    grade: int | None = None
    if grade_text:
        try:
            grade = int(float(grade_text))
        except ValueError:
            raise RowProblem(f"genant_grade {grade_text!r} is not a number 0 to 3") from None
        if not 0 <= grade <= 3:
            raise RowProblem(f"genant_grade {grade_text!r} is not in 0 to 3")
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
        rejected row: path outside the archive, unknown image, box outside the image, a level
        given twice for the same image (the first row is kept), or boxes that cannot be pixels
        (see :data:`PERCENT_SUSPECT_MIN_SIDE_PX`).

    Notes
    -----
    A row whose image path names no candidate image is matched by its SOP Instance UID when
    that names one, else by the end of its path (a box file written relative to the archive's
    parent folder, or with absolute paths): the longest tail of its folders that is a
    candidate's path. Only candidate images can match, so no row reaches a file outside the
    archive. ``notes`` counts the rows matched either way.
    """
    by_uid = {info.sop_uid: key for key, info in images.items() if info.sop_uid}
    accepted: dict[str, list[VertebraBox]] = {}
    errors: list[RowError] = []
    by_uid_rows = 0
    dropped: dict[str, int] = {}
    for box in boxes:
        name = box.image or box.sop_instance_uid

        def reject(reason: str, box: VertebraBox = box, name: str = name) -> None:
            errors.append(RowError(box.row, reason, name, box.level.value))

        if box.image:
            key = archive_key(box.image)
            if key is None or key not in images:
                found = by_uid.get(box.sop_instance_uid) if box.sop_instance_uid else None
                prefix = ""
                if found is None:
                    found, prefix = _match_tail(box.image, images)
                if found is None:
                    reject(
                        f"image path {box.image!r} points outside the archive"
                        if key is None
                        else f"image {box.image!r} is not a candidate image of this archive"
                    )
                    continue
                key = found
                if prefix:
                    dropped[prefix] = dropped.get(prefix, 0) + 1
                else:
                    by_uid_rows += 1
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
    for key in sorted(accepted):
        reason = percent_suspicion(accepted[key], images[key])
        if reason:
            errors += [RowError(b.row, reason, b.image, b.level.value) for b in accepted.pop(key)]
    ordered = {
        key: tuple(sorted(rows, key=lambda b: b.level.order)) for key, rows in accepted.items()
    }
    notes = []
    if by_uid_rows:
        notes.append(
            f"{by_uid_rows} box rows matched their image by SOP Instance UID: their image path "
            "names no candidate image"
        )
    if dropped:
        prefix, _ = max(dropped.items(), key=lambda item: item[1])
        notes.append(
            f"{sum(dropped.values())} box rows matched their image only without the leading "
            f"folders of their path (such as {prefix!r}): box paths are relative to the archive"
        )
    return ResolvedBoxes(
        by_image=dict(sorted(ordered.items())),
        errors=tuple(sorted(errors, key=lambda e: e.row)),
        notes=tuple(notes),
    )


def _match_tail(image: str, images: Mapping[str, ImageInfo]) -> tuple[str | None, str]:
    """The candidate whose path is the longest tail of ``image``'s folders, and the dropped
    leading part; ``(None, "")`` when there is none or the path climbs with ``..``."""
    parts = [p for p in image.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, ""
    for start in range(1, len(parts)):
        tail = "/".join(parts[start:])
        if tail in images:
            return tail, "/".join(parts[:start])
    return None, ""


def percent_suspicion(boxes: list[VertebraBox], info: ImageInfo) -> str:
    """Why the boxes of one image cannot be pixel coordinates, or ``""``: two or more boxes,
    all inside 0-100, on an image at least :data:`PERCENT_SUSPECT_MIN_SIDE_PX` on each side.
    That is what percent coordinates (Label Studio) read as pixels look like."""
    limit = 100 + EDGE_TOLERANCE_PX
    if len(boxes) < 2 or min(info.columns, info.rows) < PERCENT_SUSPECT_MIN_SIDE_PX:
        return ""
    if any(b.x_max > limit or b.y_max > limit for b in boxes):
        return ""
    return (
        f"all {len(boxes)} boxes of this {info.columns} x {info.rows} image lie within 0-100: "
        "percent coordinates, not pixels? Convert them to pixels, or give original_width and "
        "original_height columns (read with --box-format percent)"
    )
