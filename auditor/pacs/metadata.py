"""A QIDO-RS answer (DICOM JSON, PS3.18 F.2) as the header that triage reads.

:data:`QUERY_FIELDS` are the attributes asked for with ``includefield``: everything
:func:`auditor.archive.triage.triage_header` decides on, the identifiers the reports show, and
the image geometry. A PACS that leaves one out gives it blank, and triage treats it as it treats
a blank header value in a file (e.g. a blank View Position lets the descriptions decide).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from auditor.io.dicom import meta_from_dataset
from auditor.records import RadiographMeta

QUERY_FIELDS = (
    "SOPClassUID", "AccessionNumber", "PatientID", "PatientName", "StudyDate", "Modality",
    "BodyPartExamined", "ViewPosition", "ImageLaterality", "Laterality", "SeriesDescription",
    "StudyDescription", "ProtocolName", "PixelSpacing", "ImagerPixelSpacing", "Rows", "Columns",
    "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation", "BitsStored",
)  # fmt: skip
"""Attributes asked for in the instance-level QIDO-RS query (``includefield``)."""

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UID_TAGS = {"study": "0020000D", "series": "0020000E", "sop": "00080018"}


def is_uid(text: str) -> bool:
    """Whether ``text`` is a syntactically valid UID (PS3.5 9.1): digits and dots, 64 at most."""
    return len(text) <= 64 and bool(_UID.match(text))


def json_uids(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of one DICOM JSON object, "" for each one missing."""
    out = []
    for tag in _UID_TAGS.values():
        values = item.get(tag, {}).get("Value") or [""]
        out.append(str(values[0]).strip())
    return out[0], out[1], out[2]


def meta_from_json(item: Mapping[str, Any], path: Path) -> RadiographMeta:
    """The header of one instance from its QIDO-RS answer.

    Parameters
    ----------
    item
        One DICOM JSON object of an instance-level QIDO-RS answer.
    path
        Where the instance would lie in the cache (the meta's ``path``).

    Returns
    -------
    RadiographMeta
        ``file_format`` "dicom"; ``has_pixels`` is True when the answer gives Rows (QIDO-RS does
        not say whether an object has pixel data, but only images have Rows); the transfer syntax
        is blank (the instance is retrieved as stored).

    Raises
    ------
    ValueError
        When the answer is not DICOM JSON pydicom can read (the message says what failed).
    """
    ds = Dataset.from_json(dict(item))
    meta = meta_from_dataset(path, ds, has_pixels=True)
    return replace(meta, has_pixels=meta.rows > 0)
