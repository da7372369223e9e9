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
them reads as no banner and nothing out of distribution; where present they must have their types
(a string; a number or null; a boolean), never coerced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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

_T = TypeVar("_T")


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

    Raises
    ------
    InputFileError
        When the file is missing, not JSON, not ours, or a field has the wrong type.
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
        studies = tuple(_study_case(item) for item in document["studies"])
        return RunCases(
            threshold=float(document["threshold"]),
            training_data=str(document.get("training_data", "")),
            studies=studies,
            # absent in a cases.json written before the workbench showed the domain banner
            domain_banner=_typed(document, "domain_banner", str, ""),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{path} has a malformed field: {err!r}") from err


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


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _typed(item: dict[str, Any], key: str, kind: type[_T], default: _T) -> _T:
    """``item[key]`` when it is a ``kind`` (not coerced: a bool for a bool, a str for a str),
    ``default`` when the key is absent (a file written before the field existed).

    Raises
    ------
    TypeError
        When the value is there with another type.
    """
    if key not in item:
        return default
    value = item[key]
    if type(value) is not kind:
        raise TypeError(f"{key} must be a {kind.__name__}, got {value!r}")
    return value


def _distance(item: dict[str, Any]) -> float | None:
    """A vertebra's domain-guard distance: a number or null (None when absent).

    Raises
    ------
    TypeError
        When the value is neither.
    """
    value = item.get("distance")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise TypeError(f"distance must be a number or null, got {value!r}")
    return None if value is None else float(value)


def _study_case(item: dict[str, Any]) -> StudyCase:
    status = StudyStatus(item["status"])
    key = str(item["key"])
    read_item = item["read"]
    read = (
        None
        if read_item is None
        else ReadRow(
            row=int(read_item["row"]),
            accession_number=str(read_item["accession_number"]),
            study_uid=str(read_item["study_uid"]),
            image=str(read_item["image"]),
            fracture_reported=bool(read_item["fracture_reported"]),
            reported_levels=tuple(Level(level) for level in read_item["reported_levels"]),
            impression=str(read_item["impression"]),
            # absent in a cases.json written before reads were parsed
            mentions=tuple(
                LevelMention(str(m["level"]), Mention(m["mention"]), str(m["sentence"]))
                for m in read_item.get("mentions", ())
            ),
            disagreement=str(read_item.get("disagreement", "")),
        )
    )
    images = []
    for image_item in item["images"]:
        image = str(image_item["image"])
        vertebrae = tuple(
            VertebraFinding(
                study=key,
                image=image,
                level=Level(v["level"]),
                box_row=int(v["box_row"]),
                box=_box(v["box"]),
                box_source=str(v["box_source"]),
                box_confidence=_optional_float(v["box_confidence"]),
                probability=_optional_float(v["probability"]),
                positive=bool(v["positive"]),
                reference_label=None if v["reference_label"] is None else int(v["reference_label"]),
                heatmap=str(v["heatmap"]),
                error=str(v["error"]),
                study_status=status,
                reported=None if v["reported"] is None else bool(v["reported"]),
                # both absent in a cases.json written before the workbench marked them
                distance=_distance(v),
                out_of_distribution=_typed(v, "out_of_distribution", bool, False),
            )
            for v in image_item["vertebrae"]
        )
        images.append(
            CaseImage(
                image=image,
                ref=str(image_item["ref"]),
                sop_instance_uid=str(image_item["sop_instance_uid"]),
                vertebrae=vertebrae,
            )
        )
    rank = item["queue_rank"]
    return StudyCase(
        key=key,
        status=status,
        priority=float(item["priority"]),
        queue_rank=None if rank is None else int(rank),
        study_uid=str(item["study_uid"]),
        accession_number=str(item["accession_number"]),
        patient_id=str(item["patient_id"]),
        study_date=str(item["study_date"]),
        description=str(item["description"]),
        read=read,
        images=tuple(images),
    )


def _box(value: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in value)
    return (x0, y0, x1, y1)
