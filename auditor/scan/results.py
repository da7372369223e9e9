"""The records a finished scan hands to its report writers.

:class:`AuditReport` collects everything the reports show, in the order they show it, so that the
Excel, HTML and CSV writers only format; they decide nothing. Every string field that comes from a
DICOM header, a file name or a user CSV is untrusted and is escaped by the writers.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.scan.flags import StudyFlag, StudyStatus
from auditor.scan.reads import ReadRow
from auditor.vocab import Level

SummaryValue = str | int | float


@dataclass(frozen=True)
class VertebraFinding:
    """One classified (or unclassifiable) vertebra box."""

    study: str  # the study's display key (Study Instance UID, or the image path without one)
    image: str  # archive-relative path
    level: Level
    box_row: int
    box: tuple[float, float, float, float]
    box_source: str  # "file" or "localizer"
    box_confidence: float | None
    probability: float | None
    positive: bool
    reference_label: int | None  # label given in the box file, if any
    heatmap: str  # run-relative path of the overlay thumbnail, "" when none
    error: str  # why there is no probability, "" when there is one
    study_status: StudyStatus
    reported: bool | None  # did the read name this level as fractured (None: no read)


@dataclass(frozen=True)
class LevelEvidence:
    """One level of a flagged study: its probability, call and heatmap thumbnail."""

    level: Level
    probability: float
    positive: bool
    reported: bool
    heatmap: str  # run-relative path, "" when none was drawn
    image: str


@dataclass(frozen=True)
class StudyFinding:
    """One study with its flag, what the read said, and the evidence to judge it."""

    key: str
    study_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    study_date: str
    description: str
    images: tuple[str, ...]
    image_path: str  # absolute path of the image with the strongest finding
    flag: StudyFlag
    read: ReadRow | None
    levels: tuple[LevelEvidence, ...]
    radiograph: str  # run-relative path of the radiograph thumbnail with boxes, "" when none

    @property
    def status(self) -> StudyStatus:
        return self.flag.status

    @property
    def max_probability(self) -> float:
        return max((level.probability for level in self.levels), default=0.0)

    @property
    def read_text(self) -> str:
        """What the read said, in one line."""
        if self.read is None:
            return "no read"
        if not self.read.fracture_reported:
            return "no fracture reported"
        levels = ";".join(level.value for level in self.read.reported_levels)
        return f"fracture reported ({levels or 'levels not named'})"


@dataclass(frozen=True)
class FileRow:
    """One file of the archive: triage outcome and what the scan did with it."""

    path: str
    size: int
    status: str
    reason: str
    scan: str  # e.g. "classified 7 vertebrae", "no boxes", "cannot decode the image: ..."
    modality: str
    body_part: str
    view_position: str
    description: str


@dataclass(frozen=True)
class ErrorRow:
    """A counted, named problem with an input: a box row, a reads row, an image or a box."""

    source: str  # "box file", "reads file", "image", "crop"
    row: int | None
    item: str
    reason: str


@dataclass(frozen=True)
class AuditReport:
    """Everything the scan reports show."""

    title: str
    summary: tuple[tuple[str, SummaryValue], ...]
    status_counts: tuple[tuple[StudyStatus, int], ...]
    threshold: float
    studies: tuple[StudyFinding, ...]  # flagged studies, in queue order
    vertebrae: tuple[VertebraFinding, ...]
    files: tuple[FileRow, ...]
    errors: tuple[ErrorRow, ...]
