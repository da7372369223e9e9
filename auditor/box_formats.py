"""What annotation tools write, read into tlaudit's box rows.

:mod:`auditor.boxes` checks box rows and matches them to images; this module turns the files
people actually have into those rows. Each row comes out as a :class:`RawBox`: tlaudit's column
names (``image``, ``sop_instance_uid``, ``level``, ``label``...) and the box's corners
``x_min, y_min, x_max, y_max`` in stored pixels (x = column, y = row).

CSV. The delimiter is taken from the header line: a comma, a semicolon (what a spreadsheet in a
European locale saves, where ``12,5`` is then also read as 12.5), a tab or ``|``. Column names
are compared in lower case with spaces, ``_``, ``-`` and ``.`` removed, so ``X Min`` is ``x_min``.
The box itself is read in one of these layouts (:class:`~auditor.vocab.BoxFormat`):

==========  ===============================================================================
layout      columns
==========  ===============================================================================
corners     ``x_min, y_min, x_max, y_max``; also ``xmin..ymax``, CVAT's ``xtl, ytl, xbr, ybr``,
            ``x1, y1, x2, y2`` and ``left, top, right, bottom``; pixels
xywh        the top-left corner and the size: ``x, y, w, h`` (or ``width, height``), pixels
percent     Label Studio: ``x, y, width, height`` in percent (0-100) of the image's
            ``original_width`` and ``original_height``, which the same row gives
==========  ===============================================================================

With ``auto`` (the default) the columns decide: a corner set is read as corners; ``x, y, width,
height`` beside ``original_width, original_height`` as Label Studio percent; ``x, y, w, h``
without them as pixels. A file that holds columns of two layouts is refused unless
``--box-format`` says which one to read. Coordinates that only look like pixels (every box of a
large image inside 0-100) are caught later, when the rows meet the images
(:func:`auditor.boxes.resolve_boxes`).

Other columns: the image is ``image`` (or ``image_path``, ``file_name``, ``file``, ``path``;
Label Studio's ``/data/local-files/?d=`` URLs are read as the path after ``d=``), the SOP
Instance UID ``sop_instance_uid`` (or ``sop_uid``), the level ``level`` (or ``vertebra``,
``rectanglelabels``, ``category``, ``class``; without any of them, a ``label`` column naming
levels, as CVAT writes it). Every other column keeps its name in lower case.

COCO JSON: ``images`` ({id, file_name, sop_instance_uid?}), ``categories`` ({id, name}),
``annotations`` ({image_id, category_id, bbox: [x, y, width, height] in pixels, attributes?}).
The level is the category's name or, when that names no level (one category ``vertebra``, as
CVAT exports it), the annotation's ``level`` (or ``vertebra``) attribute; attribute names are
read in any case. Anything that is not this shape is refused as a whole, never half read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from auditor.errors import InputFileError
from auditor.files import csv_unsafe
from auditor.records import RowError
from auditor.vocab import BoxFormat, Level

#: The corners every layout is converted to.
CORNERS = ("x_min", "y_min", "x_max", "y_max")

#: Delimiters a CSV box file may use, in the order ties are broken.
DELIMITERS = (",", ";", "\t", "|")

# Column names after normalisation (:func:`_norm`), most specific first.
_CORNER_SETS = (
    ("xmin", "ymin", "xmax", "ymax"),
    ("xtl", "ytl", "xbr", "ybr"),
    ("x1", "y1", "x2", "y2"),
    ("left", "top", "right", "bottom"),
)
_XYWH_SETS = (("x", "y", "width", "height"), ("x", "y", "w", "h"))
_ORIGINAL_SIZE = ("originalwidth", "originalheight")
_IMAGE_COLUMNS = ("image", "imagepath", "imagename", "filename", "file", "filepath", "path")
_UID_COLUMNS = ("sopinstanceuid", "sopuid")
_LEVEL_COLUMNS = (
    "level", "vertebra", "vertebralevel", "rectanglelabels", "category", "categoryname",
    "class", "classname",
)  # fmt: skip
# tlaudit's other columns, as people spell them
_OTHER_COLUMNS = {
    "label": "label",
    "aotype": "ao_type",
    "genantgrade": "genant_grade",
    "patientid": "patient_id",
    "studyuid": "study_uid",
    "studyinstanceuid": "study_uid",
    "source": "source",
    "confidence": "confidence",
}
_LABEL_STUDIO_LOCAL = "/data/local-files/?d="
#: Slack, in percent, for Label Studio boxes drawn a hair past the image edge.
PERCENT_TOLERANCE = 0.5


class RowProblem(ValueError):
    """Why one row cannot be read; the reader turns it into a :class:`~auditor.records.RowError`."""


@dataclass(frozen=True)
class RawBox:
    """One row of a box file in tlaudit's terms, not yet checked.

    ``record`` maps tlaudit's column names to the row's text; ``coords`` holds ``x_min``..
    ``y_max`` in pixels, as numbers or as the text of the file (checked by the caller).
    """

    row: int
    record: Mapping[str, str]
    coords: Mapping[str, float | str]


@dataclass(frozen=True)
class RawTable:
    """The rows of a box file, the rows that could not be read, and how the file was read."""

    rows: tuple[RawBox, ...]
    errors: tuple[RowError, ...]
    layout: str


def number(value: Any, name: str) -> float:
    """``value`` as a finite float, or a :class:`RowProblem` naming the field ``name``."""
    if isinstance(value, bool):
        raise RowProblem(f"{name} is not a number: {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RowProblem(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(result):
        raise RowProblem(f"{name} is not a finite number: {value!r}")
    return result


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().lower())


def _first(present: Sequence[str], wanted: Iterable[str]) -> str | None:
    return next((name for name in wanted if name in present), None)


def _count_outside_quotes(line: str, char: str) -> int:
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == char and not quoted:
            count += 1
    return count


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a CSV header line: the one of :data:`DELIMITERS` it holds most often
    outside quotes (a comma when it holds none)."""
    counts = {d: _count_outside_quotes(header_line, d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass(frozen=True)
class _Layout:
    """How a CSV file's columns are read: which columns hold what, in which units."""

    box_format: BoxFormat  # never AUTO
    box_columns: tuple[str, ...]  # normalised names: 4 corners, or x, y, w, h
    image: str | None
    uid: str | None
    level: str | None
    level_from_label: bool
    decimal_comma: bool

    def describe(self, delimiter: str) -> str:
        units = {
            BoxFormat.CORNERS: "corners in pixels",
            BoxFormat.XYWH: "top-left corner, width and height in pixels",
            BoxFormat.PERCENT: "Label Studio percent of original_width / original_height",
        }[self.box_format]
        named = "'\\t'" if delimiter == "\t" else repr(delimiter)
        return f"CSV ({named}-delimited), {', '.join(self.box_columns)}: {units}"


def _choose_layout(
    path: Path, names: Sequence[str], box_format: BoxFormat, label_names_levels: bool
) -> _Layout:
    """Decide how to read the columns ``names`` (normalised); refuse what cannot be read."""
    present = list(names)
    found = ", ".join(n for n in names if n) or "none"
    image = _first(present, _IMAGE_COLUMNS)
    uid = _first(present, _UID_COLUMNS)
    level = _first(present, _LEVEL_COLUMNS)
    from_label = level is None and "label" in present and label_names_levels
    missing = []
    if image is None and uid is None:
        missing.append("image or sop_instance_uid")
    if level is None and not from_label:
        missing.append("level")
    corners = next((s for s in _CORNER_SETS if set(s) <= set(present)), None)
    xywh = next((s for s in _XYWH_SETS if set(s) <= set(present)), None)
    original = set(_ORIGINAL_SIZE) <= set(present)
    chosen = box_format
    if box_format is BoxFormat.AUTO:
        if corners and xywh:
            raise InputFileError(
                f"box file {path}: it has corner columns ({', '.join(corners)}) and "
                f"x, y, width, height columns ({', '.join(xywh)}); say which to read with "
                "--box-format corners, xywh or percent"
            )
        if corners:
            chosen = BoxFormat.CORNERS
        elif xywh:
            chosen = BoxFormat.PERCENT if original else BoxFormat.XYWH
    columns = corners if chosen is BoxFormat.CORNERS else xywh
    if chosen is BoxFormat.AUTO or columns is None:
        missing.append(_LAYOUT_NEEDS.get(chosen, _LAYOUT_NEEDS[BoxFormat.AUTO]))
    elif chosen is BoxFormat.PERCENT and not original:
        missing.append("original_width, original_height (percent coordinates need them)")
    if missing:
        raise InputFileError(
            f"box file {path}: missing column(s) {'; '.join(missing)}; found {found}"
        )
    assert columns is not None
    return _Layout(chosen, columns, image, uid, level, from_label, decimal_comma=False)


_LAYOUT_NEEDS = {
    BoxFormat.AUTO: (
        "x_min, y_min, x_max, y_max (or xmin..ymax, CVAT's xtl, ytl, xbr, ybr, x1..y2), or "
        "x, y, w, h in pixels, or Label Studio's x, y, width, height with original_width, "
        "original_height"
    ),
    BoxFormat.CORNERS: "x_min, y_min, x_max, y_max (or xmin..ymax, xtl, ytl, xbr, ybr, x1..y2)",
    BoxFormat.XYWH: "x, y, w, h (or x, y, width, height)",
    BoxFormat.PERCENT: "x, y, width, height",
}


def _clean_level(text: str) -> str:
    """A level as annotation tools write it: ``["L1"]`` (Label Studio) is ``L1``."""
    return text.strip().strip("[]").strip().strip("\"'").strip()


def _image_path(text: str) -> str:
    """An image reference as a path: Label Studio's local-files URL gives the path after ``d=``."""
    if text.startswith(_LABEL_STUDIO_LOCAL):
        return unquote(text[len(_LABEL_STUDIO_LOCAL) :])
    return text


def _decimal(text: str, decimal_comma: bool) -> str:
    if decimal_comma and re.fullmatch(r"\s*[+-]?\d+,\d+\s*", text):
        return text.replace(",", ".")
    return text


def _coords(layout: _Layout, values: Mapping[str, str]) -> dict[str, float | str]:
    """The corners in pixels from one row's box columns (``values``: normalised name -> text)."""
    texts = [_decimal(values.get(name, ""), layout.decimal_comma) for name in layout.box_columns]
    if layout.box_format is BoxFormat.CORNERS:
        return dict(zip(CORNERS, texts, strict=True))
    x, y, w, h = (number(t, n) for t, n in zip(texts, ("x", "y", "width", "height"), strict=True))
    if layout.box_format is BoxFormat.PERCENT:
        for value, name in ((x, "x"), (y, "y"), (w, "width"), (h, "height")):
            if not -PERCENT_TOLERANCE <= value <= 100 + PERCENT_TOLERANCE:
                raise RowProblem(f"{name} {value:g} is not a percentage (0 to 100)")
        sizes = [_decimal(values.get(name, ""), layout.decimal_comma) for name in _ORIGINAL_SIZE]
        names = ("original_width", "original_height")
        width, height = (number(t, n) for t, n in zip(sizes, names, strict=True))
        if width <= 0 or height <= 0:
            raise RowProblem(f"original size {width:g} x {height:g} is not an image size")
        return {
            "x_min": x / 100 * width,
            "y_min": y / 100 * height,
            "x_max": (x + w) / 100 * width,
            "y_max": (y + h) / 100 * height,
        }
    return {"x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h}


def read_csv_table(path: Path, box_format: BoxFormat = BoxFormat.AUTO) -> RawTable:
    """Read a CSV box file in any of the layouts of the module docstring.

    Parameters
    ----------
    path
        The CSV file.
    box_format
        The layout to read; ``auto`` decides from the columns.

    Returns
    -------
    RawTable
        Rows in tlaudit's terms, a :class:`~auditor.records.RowError` for each row whose box
        cannot be converted, and a description of how the file was read.

    Raises
    ------
    InputFileError
        When the file is not UTF-8 CSV, is empty, or lacks the columns the layout needs.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputFileError(
            f"box file {path} is not UTF-8 text; save it as CSV UTF-8 ({err})"
        ) from err
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    if not header_line:
        raise InputFileError(f"box file {path} is empty; expected a header row and one row per box")
    delimiter = sniff_delimiter(header_line)
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader)
        # blank lines are no rows (as csv.DictReader has it), so row numbers match its count
        body = list(enumerate((row for row in reader if row), start=1))
    except csv.Error as err:
        raise InputFileError(f"box file {path} is not valid CSV: {err}") from err
    keys = [name.strip().lower() for name in header]
    names = [_norm(name) for name in header]
    label_names_levels = False
    if "label" in names and _first(names, _LEVEL_COLUMNS) is None:
        at = names.index("label")
        label_names_levels = any(_is_level(row[at]) for _, row in body if at < len(row))
    layout = _choose_layout(path, names, box_format, label_names_levels)
    layout = replace(layout, decimal_comma=delimiter != ",")

    rows: list[RawBox] = []
    errors: list[RowError] = []
    for row_number, cells in body:
        values: dict[str, str] = {}
        record: dict[str, str] = {}
        for key, name, cell in zip(keys, names, cells, strict=False):
            value = csv_unsafe(cell.strip())
            values.setdefault(name, value)
            record.setdefault(key, value)
        for name, canonical in _OTHER_COLUMNS.items():
            if name in values:
                record[canonical] = values[name]
        record["image"] = _image_path(values[layout.image]) if layout.image else ""
        record["sop_instance_uid"] = values.get(layout.uid, "") if layout.uid else ""
        if layout.level_from_label:
            record["level"], record["label"] = _clean_level(values.get("label", "")), ""
        else:
            record["level"] = _clean_level(values.get(layout.level or "", ""))
        try:
            rows.append(RawBox(row_number, record, _coords(layout, values)))
        except RowProblem as err:
            errors.append(RowError(row_number, str(err), record["image"], record["level"]))
    return RawTable(tuple(rows), tuple(errors), layout.describe(delimiter))


def _is_level(text: str) -> bool:
    try:
        Level.parse(_clean_level(text))
    except ValueError:
        return False
    return True


def _key(value: Any) -> int | float | str | None:
    """A COCO id usable as a dictionary key (None for lists, objects, booleans, null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    return value


def _objects(document: Mapping[str, Any], name: str, path: Path) -> list[Mapping[str, Any]]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise InputFileError(
            f"box file {path}: '{name}' is {type(value).__name__}, expected a list of objects"
        )
    return [item for item in value if isinstance(item, dict)]


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool)):
        return str(value)
    return None  # lists and objects are not a column's value


def read_coco_table(path: Path, box_format: BoxFormat = BoxFormat.AUTO) -> RawTable:
    """Read a COCO JSON box file (see the module docstring).

    Raises
    ------
    InputFileError
        When the file is not JSON, nests too deeply, is not COCO-shaped, or ``box_format``
        asks for a layout COCO does not have (its bbox is ``[x, y, width, height]`` in pixels).
    """
    if box_format not in (BoxFormat.AUTO, BoxFormat.XYWH):
        raise InputFileError(
            f"box file {path} is COCO JSON, whose bbox is [x, y, width, height] in pixels; "
            f"--box-format {box_format.value} applies to CSV files"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except RecursionError as err:
        raise InputFileError(f"box file {path}: JSON nested too deeply to be a COCO file") from err
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise InputFileError(f"box file {path} is not valid JSON: {err}") from err
    if isinstance(document, list):
        raise InputFileError(
            f"box file {path}: a JSON list, not a COCO file (no 'annotations'); a Label Studio "
            "JSON export? Export COCO, or CSV with x, y, width, height, original_width, "
            "original_height"
        )
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise InputFileError(f"box file {path}: not a COCO file (no 'annotations' list)")
    images = {_key(image.get("id")): image for image in _objects(document, "images", path)}
    categories = {
        _key(category.get("id")): _scalar_text(category.get("name")) or ""
        for category in _objects(document, "categories", path)
    }
    images.pop(None, None)
    categories.pop(None, None)

    rows: list[RawBox] = []
    errors: list[RowError] = []
    for row_number, annotation in enumerate(document["annotations"], start=1):
        try:
            rows.append(_coco_row(row_number, annotation, images, categories))
        except RowProblem as err:
            errors.append(RowError(row_number, str(err)))
    return RawTable(tuple(rows), tuple(errors), "COCO JSON, bbox [x, y, width, height] in pixels")


def _coco_row(
    row_number: int,
    annotation: Any,
    images: Mapping[Any, Mapping[str, Any]],
    categories: Mapping[Any, str],
) -> RawBox:
    if not isinstance(annotation, dict):
        raise RowProblem("annotation is not an object")
    image_id = _key(annotation.get("image_id"))
    image = images.get(image_id) if image_id is not None else None
    if image is None:
        raise RowProblem(f"image_id {annotation.get('image_id')!r} is not in 'images'")
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise RowProblem(f"bbox must be [x, y, width, height], got {_short(bbox)}")
    x, y, w, h = (number(value, "bbox") for value in bbox)
    attributes = annotation.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise RowProblem("attributes must be an object")
    extra: dict[str, str] = {}
    for name, value in attributes.items():
        text = _scalar_text(value)
        if text is not None:
            extra.setdefault(str(name).strip().lower(), text)
    category_id = _key(annotation.get("category_id"))
    category = categories.get(category_id, "") if category_id is not None else ""
    level = next((extra[n] for n in ("level", "vertebra") if extra.get(n)), "")
    if not level or _is_level(category):
        level = category or level
    record = {
        **extra,
        "image": _scalar_text(image.get("file_name")) or "",
        "sop_instance_uid": _scalar_text(image.get("sop_instance_uid")) or "",
        "level": _clean_level(level),
    }
    coords: dict[str, float | str] = {"x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h}
    return RawBox(row_number, record, coords)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
