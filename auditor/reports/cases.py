"""``cases.json``: every classified study of a run with its boxes, for the review workbench.

The HTML and Excel reports show the flagged queue; a reviewer also needs the boxes (to move,
rename, delete or add them), the studies that were not flagged (a random sample of them estimates
what the scan misses) and a way back to each image. This file holds exactly that, written by the
scan like every report and read by :mod:`auditor.review`. It names images by a keyed reference
(:meth:`~auditor.reports.pseudonym.Pseudonymiser.ref`), never by path, and carries identifiers as
the reports show them, so it is pseudonymised whenever the reports are.

Layout (``format`` and ``version`` are checked on reading)::

    {"format": "tlaudit-cases", "version": 1, "threshold": 0.32, "training_data": "synthetic",
     "domain_banner": "",
     "studies": [{"key", "status", "priority", "queue_rank", "study_uid", "accession_number",
                  "patient_id", "study_date", "description",
                  "read": null | {"row", "accession_number", "study_uid", "image",
                                  "fracture_reported", "reported_levels", "impression",
                                  "mentions": [{"level", "mention", "sentence"}],
                                  "disagreement"},
                  "images": [{"image", "ref", "sop_instance_uid",
                              "vertebrae": [{"box_row", "level", "box", "box_source",
                                             "box_confidence", "probability", "positive",
                                             "reference_label", "heatmap", "error",
                                             "reported", "distance",
                                             "out_of_distribution"}]}]}]}

``domain_banner`` is the domain guards' warning (:meth:`~auditor.records.DomainCheck.banner`), ""
when the archive is in the model's domain or was not checked; a vertebra's ``distance`` and
``out_of_distribution`` are its :class:`~auditor.records.VertebraFinding`'s. An older file without
them reads as no banner and nothing out of distribution (so does one without ``training_data``,
``mentions`` or ``disagreement``).

Every field is read strictly: present (but for those older files lack) and with the type the scan
writes, never coerced; a probability and the threshold lie in [0, 1]. A damaged or edited file is
refused with an :class:`~auditor.errors.InputFileError` naming the field and the value found.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, cast

from auditor.errors import InputFileError
from auditor.files import write_text_atomic
from auditor.records import (
    AuditReport,
    CaseImage,
    LevelMention,
    ReadRow,
    StudyCase,
    StudyStatus,
    VertebraFinding,
)
from auditor.vocab import Level, Mention

CASES_NAME = "cases.json"
_FORMAT = "tlaudit-cases"
_VERSION = 1

_E = TypeVar("_E", bound=Enum)
_T = TypeVar("_T")
_LEVELS = tuple(level.value for level in Level)


@dataclass(frozen=True)
class RunCases:
    """What ``cases.json`` holds: the run's operating point, what the model was trained on, and
    every classified study (flagged in queue order, then the rest by key)."""

    threshold: float
    training_data: str
    studies: tuple[StudyCase, ...]
    domain_banner: str = ""  # DomainCheck.banner() of the scan, "" when none was due


def write_cases(report: AuditReport, target: Path, training_data: str = "") -> None:
    """Write ``report.cases`` to ``target`` as JSON (atomically), with the domain banner of
    ``report.domain`` ("" when none is due)."""
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "threshold": report.threshold,
        "training_data": training_data,
        "domain_banner": report.domain.banner() if report.domain else "",
        "studies": [_study_json(case) for case in report.cases],
    }
    write_text_atomic(target, json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def read_cases(path: Path) -> RunCases:
    """Read a ``cases.json`` a scan wrote.

    Every field is read strictly (:class:`_Fields`): it must be there (but for the fields older
    scans did not write) with the type the scan writes, never coerced, so that a damaged or
    edited file is refused instead of read as something else (the string ``"no"`` as true).

    Raises
    ------
    InputFileError
        When the file is missing, not JSON, not ours, or a field is missing or has the wrong type
        or value (the message names the field, as ``studies[0].images[0].vertebrae[3].positive``,
        and the value found).
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputFileError(
            f"{path} does not exist: is this the run folder of a tlaudit scan (0.9 or later)?"
        ) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise InputFileError(f"{path} cannot be read as JSON: {err}") from err
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise InputFileError(f"{path} is not a tlaudit cases file (format marker missing)")
    if document.get("version") != _VERSION:
        raise InputFileError(
            f"{path} is version {document.get('version')!r} of the cases file; this tlaudit "
            f"reads version {_VERSION}"
        )
    try:
        fields = _Fields(document, "")
        return RunCases(
            threshold=fields.number("threshold", low=0.0, high=1.0),
            training_data=fields.text("training_data", default=""),
            studies=tuple(_study_case(study) for study in fields.objects("studies")),
            # absent in a cases.json written before the workbench showed the domain banner
            domain_banner=fields.text("domain_banner", default=""),
        )
    except _Malformed as err:
        raise InputFileError(
            f"{path} has a malformed field: {err}. A scan never writes that: the file is damaged "
            "or was edited; scan the archive again to write it afresh"
        ) from err


def _study_json(case: StudyCase) -> dict[str, Any]:
    read = case.read
    return {
        "key": case.key,
        "status": case.status.value,
        "priority": case.priority,
        "queue_rank": case.queue_rank,
        "study_uid": case.study_uid,
        "accession_number": case.accession_number,
        "patient_id": case.patient_id,
        "study_date": case.study_date,
        "description": case.description,
        "read": None
        if read is None
        else {
            "row": read.row,
            "accession_number": read.accession_number,
            "study_uid": read.study_uid,
            "image": read.image,
            "fracture_reported": read.fracture_reported,
            "reported_levels": [level.value for level in read.reported_levels],
            "impression": read.impression,
            "mentions": [
                {"level": m.level, "mention": m.mention.value, "sentence": m.sentence}
                for m in read.mentions
            ],
            "disagreement": read.disagreement,
        },
        "images": [
            {
                "image": image.image,
                "ref": image.ref,
                "sop_instance_uid": image.sop_instance_uid,
                "vertebrae": [_vertebra_json(v) for v in image.vertebrae],
            }
            for image in case.images
        ],
    }


def _vertebra_json(v: VertebraFinding) -> dict[str, Any]:
    return {
        "box_row": v.box_row,
        "level": v.level.value,
        "box": list(v.box),
        "box_source": v.box_source,
        "box_confidence": v.box_confidence,
        "probability": v.probability,
        "positive": v.positive,
        "reference_label": v.reference_label,
        "heatmap": v.heatmap,
        "error": v.error,
        "reported": v.reported,
        "distance": v.distance,
        "out_of_distribution": v.out_of_distribution,
    }


class _Malformed(ValueError):
    """A field of ``cases.json`` that is missing or not as the scan writes it."""


def _shown(value: Any) -> str:
    """A value found in the file, for a message: its JSON spelling, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else f"{text[:57]}..."


class _Fields:
    """The fields of one JSON object of ``cases.json``, each read with the type the scan writes
    and never coerced (a bool is not a number, ``"0.5"`` is not a number, ``"no"`` is not a bool).

    ``where`` names the object in messages (``studies[2].images[0]``; "" for the document). A
    ``default`` is only for a field older scans did not write: absent, it reads as the default;
    present, it must still have its type.

    Raises
    ------
    _Malformed
        From every reader, naming the field and the value found.
    """

    def __init__(self, value: Any, where: str) -> None:
        if type(value) is not dict:
            raise _Malformed(f"{where} must be an object, got {_shown(value)}")
        self._item: dict[str, Any] = value
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def _value(self, key: str, missing_ok: bool = False) -> Any:
        if key not in self._item and not missing_ok:
            raise _Malformed(f"{self._name(key)} is missing")
        return self._item.get(key)

    def _wrong(self, key: str, expected: str) -> _Malformed:
        return _Malformed(f"{self._name(key)} must be {expected}, got {_shown(self._item[key])}")

    def _typed(self, key: str, kind: type[_T], expected: str, default: _T | None) -> _T:
        """A value of exactly the type ``kind`` (``default`` when absent, if given)."""
        if default is not None and key not in self._item:
            return default
        value = self._value(key)
        if type(value) is not kind:
            raise self._wrong(key, expected)
        return cast("_T", value)

    def text(self, key: str, default: str | None = None) -> str:
        """A string (``default`` when absent, if given)."""
        return self._typed(key, str, "a string", default)

    def flag(self, key: str, default: bool | None = None) -> bool:
        """``true`` or ``false`` (``default`` when absent, if given)."""
        return self._typed(key, bool, "true or false", default)

    def optional_flag(self, key: str) -> bool | None:
        """``true``, ``false`` or ``null``."""
        value = self._value(key)
        if value is not None and type(value) is not bool:
            raise self._wrong(key, "true, false or null")
        return value

    def integer(self, key: str, low: int | None = None) -> int:
        """A whole number (not a boolean, not ``1.0``), at least ``low`` when given."""
        value = self._value(key)
        if type(value) is not int or (low is not None and value < low):
            raise self._wrong(key, "a whole number" if low is None else f"a whole number >= {low}")
        return value

    def optional_integer(self, key: str, low: int | None = None) -> int | None:
        """:meth:`integer` or ``null``."""
        return None if self._value(key) is None else self.integer(key, low)

    def number(self, key: str, low: float | None = None, high: float | None = None) -> float:
        """A finite number (not a boolean, not a string), within ``[low, high]`` when given."""
        value = self._value(key)
        expected = "a number" if low is None else f"a number from {low} to {high}"
        if type(value) not in (int, float) or not math.isfinite(value):
            raise self._wrong(key, expected)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self._wrong(key, expected)
        return float(value)

    def optional_number(
        self,
        key: str,
        low: float | None = None,
        high: float | None = None,
        missing_ok: bool = False,
    ) -> float | None:
        """:meth:`number` or ``null`` (also when absent, with ``missing_ok``)."""
        if self._value(key, missing_ok) is None:
            return None
        return self.number(key, low, high)

    def choice(self, key: str, kind: type[_E]) -> _E:
        """One of the values of the string enum ``kind``."""
        value = self._value(key)
        try:
            if type(value) is not str:
                raise ValueError(value)
            return kind(value)
        except ValueError:
            names = ", ".join(repr(member.value) for member in kind)
            raise self._wrong(key, f"one of {names}") from None

    def box(self, key: str) -> tuple[float, float, float, float]:
        """Four finite numbers: x0, y0, x1, y1."""
        value = self._value(key)
        if (
            type(value) is not list
            or len(value) != 4
            or not all(type(v) in (int, float) and math.isfinite(v) for v in value)
        ):
            raise self._wrong(key, "a list of four numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in value)
        return (x0, y0, x1, y1)

    def _list(self, key: str, default: list[Any] | None) -> list[Any]:
        return self._typed(key, list, "a list", default)

    def levels(self, key: str) -> tuple[Level, ...]:
        """A list of vertebral levels (``"T10"`` .. ``"S1"``)."""
        items = self._list(key, None)
        if not all(type(v) is str and v in _LEVELS for v in items):
            raise self._wrong(key, f"a list of levels ({', '.join(_LEVELS)})")
        return tuple(Level(v) for v in items)

    def objects(self, key: str, default: list[Any] | None = None) -> list[_Fields]:
        """A list of objects, each read as :class:`_Fields` (``default`` when absent, if given)."""
        return [
            _Fields(item, f"{self._name(key)}[{i}]")
            for i, item in enumerate(self._list(key, default))
        ]

    def optional_object(self, key: str) -> _Fields | None:
        """An object or ``null``."""
        value = self._value(key)
        return None if value is None else _Fields(value, self._name(key))


def _study_case(item: _Fields) -> StudyCase:
    status = item.choice("status", StudyStatus)
    key = item.text("key")
    read_item = item.optional_object("read")
    read = (
        None
        if read_item is None
        else ReadRow(
            row=read_item.integer("row", low=1),
            accession_number=read_item.text("accession_number"),
            study_uid=read_item.text("study_uid"),
            image=read_item.text("image"),
            fracture_reported=read_item.flag("fracture_reported"),
            reported_levels=read_item.levels("reported_levels"),
            impression=read_item.text("impression"),
            # absent in a cases.json written before reads were parsed
            mentions=tuple(
                LevelMention(m.text("level"), m.choice("mention", Mention), m.text("sentence"))
                for m in read_item.objects("mentions", default=[])
            ),
            disagreement=read_item.text("disagreement", default=""),
        )
    )
    images = []
    for image_item in item.objects("images"):
        image = image_item.text("image")
        vertebrae = tuple(
            VertebraFinding(
                study=key,
                image=image,
                level=v.choice("level", Level),
                box_row=v.integer("box_row"),
                box=v.box("box"),
                box_source=v.text("box_source"),
                box_confidence=v.optional_number("box_confidence"),
                probability=v.optional_number("probability", low=0.0, high=1.0),
                positive=v.flag("positive"),
                reference_label=v.optional_integer("reference_label"),
                heatmap=v.text("heatmap"),
                error=v.text("error"),
                study_status=status,
                reported=v.optional_flag("reported"),
                # both absent in a cases.json written before the workbench marked them
                distance=v.optional_number("distance", missing_ok=True),
                out_of_distribution=v.flag("out_of_distribution", default=False),
            )
            for v in image_item.objects("vertebrae")
        )
        images.append(
            CaseImage(
                image=image,
                ref=image_item.text("ref"),
                sop_instance_uid=image_item.text("sop_instance_uid"),
                vertebrae=vertebrae,
            )
        )
    return StudyCase(
        key=key,
        status=status,
        priority=item.number("priority"),
        queue_rank=item.optional_integer("queue_rank", low=1),
        study_uid=item.text("study_uid"),
        accession_number=item.text("accession_number"),
        patient_id=item.text("patient_id"),
        study_date=item.text("study_date"),
        description=item.text("description"),
        read=read,
        images=tuple(images),
    )
