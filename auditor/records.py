"""The records the stages hand each other, in one module that every stage imports and none owns.

A radiograph and its header (:class:`RadiographMeta`, :class:`Radiograph`) come out of
:func:`auditor.io.radiograph.read_radiograph`; vertebra boxes (:class:`VertebraBox`) out of a box
file or the localizer; a study's original read (:class:`ReadRow`) out of the reads file; the flag
rules of :mod:`auditor.scan.flags` give a :class:`StudyFlag`; and a finished scan hands its report
writers an :class:`AuditReport`, which collects everything the reports show in the order they show
it, so that the Excel, HTML and CSV writers only format and decide nothing.

Every string field that comes from a DICOM header, a file name or a user CSV is untrusted and is
escaped by the writers. This module imports nothing heavy (numpy only when it computes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from auditor.vocab import STUDY_WIDE, Level, Mention

RowT = TypeVar("RowT")

if TYPE_CHECKING:  # numpy is only named in annotations here, so the CLI can import records
    import numpy as np
    import numpy.typing as npt

# -- radiographs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RadiographMeta:
    """Header fields tlaudit needs, read without decoding pixels.

    Strings are exactly as found in the header ("" when absent); they are untrusted user data and
    must be escaped wherever they are shown.
    """

    path: Path
    file_format: str  # "dicom", "png", "jpeg" or "tiff"
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""
    series_description: str = ""
    study_description: str = ""
    protocol_name: str = ""
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    rows: int = 0
    columns: int = 0
    frames: int = 1
    samples_per_pixel: int = 1
    photometric: str = ""
    bits_stored: int = 0
    transfer_syntax: str = ""
    has_pixels: bool = True
    sop_class_uid: str = ""
    pixel_data_error: str = ""  # why the pixel data is visibly broken, found without decoding


@dataclass(frozen=True)
class Radiograph:
    """A decoded radiograph in display orientation.

    ``pixels`` is float32, shape (rows, columns), scaled to [0, 1] after the Modality LUT,
    VOI LUT / windowing and MONOCHROME1 inversion, so that bone is bright.
    """

    pixels: npt.NDArray[np.float32]
    meta: RadiographMeta
    # how display values were obtained, e.g. "VOI LUT", "window 2048/4096 (LINEAR)",
    # "percentile 0.5-99.5", with "; MONOCHROME1 inverted" when inverted
    windowing: str


# -- the call -------------------------------------------------------------------------------------


def is_positive(probability: float | None, threshold: float) -> bool:
    """The one rule that calls a vertebra positive: its fracture probability is at or above the
    operating point's threshold. A vertebra without a probability (not classified) never is."""
    return probability is not None and float(probability) >= threshold


#: How the reports mark a call (and a study's status) whose crop is out of distribution.
OUT_OF_DISTRIBUTION = "out of distribution"


def is_out_of_distribution(distance: float | None, threshold: float | None) -> bool:
    """The one rule that marks a crop out of distribution: its domain-guard distance
    (:mod:`auditor.model.guard`) lies above the guard's threshold. Without a distance or a
    threshold (no guard) nothing is marked."""
    return distance is not None and threshold is not None and float(distance) > threshold


def crop_domain_verdict(
    probability: float | None, distance: float | None, image_refused: bool, threshold: float | None
) -> bool | None:
    """Whether one crop counts as out of distribution toward the archive rules: every crop of an
    image the image check refused, or a crop beyond the guard's ``threshold``
    (:func:`is_out_of_distribution`). None when the crop has no verdict to count: it was not
    classified (no ``probability``), or it has no distance and its image was not refused."""
    if probability is None or (distance is None and not image_refused):
        return None
    return image_refused or is_out_of_distribution(distance, threshold)


def positives(probabilities: npt.ArrayLike, threshold: float) -> npt.NDArray[np.bool_]:
    """:func:`is_positive` for an array of probabilities (float64 comparison, as for one)."""
    import numpy as np

    return np.asarray(probabilities, dtype=np.float64) >= threshold


# -- vertebra boxes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VertebraBox:
    """One vertebral body box, as given by a box file or found by the localizer.

    ``row`` is the 1-based data row of a CSV file (or the 1-based position of the annotation in a
    COCO file), so error messages and reports can point a person at it.
    """

    row: int
    image: str
    sop_instance_uid: str
    level: Level
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    label: int | None = None
    ao_type: str = ""
    genant_grade: int | None = None
    patient_id: str = ""
    study_uid: str = ""
    source: str = "file"
    confidence: float | None = None

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The box as ``(x_min, y_min, x_max, y_max)``."""
        return (self.x_min, self.y_min, self.x_max, self.y_max)


@dataclass(frozen=True)
class LocalizerOutcome:
    """What the localizer made of one candidate image (a row of ``<stem>.images.csv``)."""

    image: str  # archive-relative path
    status: str  # "localized", "nothing_found" or "unreadable"
    reason: str  # why nothing usable was found or the file could not be read; "" when localized
    # the localizer's domain-guard distance of the image and whether it lies beyond the guard's
    # threshold (None / False without a guard or without a decoded image)
    distance: float | None = None
    out_of_distribution: bool = False


@dataclass(frozen=True)
class RowError:
    """A rejected row of an input table (box file, reads file), or an image the localizer found
    nothing usable on, with a reason a person can act on. Every input table reports its bad rows
    as these, and the scan counts and lists each one.

    ``row`` is the 1-based data row of the file (0 for a localizer image, which is no row);
    ``image``, ``level`` and ``key`` are what the row names, where it names them.
    """

    row: int
    reason: str
    image: str = ""
    level: str = ""
    key: str = ""  # a study key (Study Instance UID, accession number) a reads row names
    source: str = "box file"  # "box file", "localizer" or "reads file"

    @property
    def item(self) -> str:
        """What the row names, for messages: ``image level``, or the study key."""
        return " ".join(p for p in (self.image, self.level) if p) or self.key

    def __str__(self) -> str:
        if self.image:
            where = f" ({self.image}{', ' + self.level if self.level else ''})"
        else:
            where = f" ({self.key})" if self.key else ""
        return f"row {self.row}{where}: {self.reason}"


@dataclass(frozen=True)
class InputTable(Generic[RowT]):
    """An input table a person gave us (box file, reads file): the rows that passed the row
    checks and one :class:`RowError` for each row that did not. Every table reader returns one.
    ``notes`` are lines for the person who gave it: how the file was read."""

    path: Path
    rows: tuple[RowT, ...]
    errors: tuple[RowError, ...]
    notes: tuple[str, ...] = ()


# -- reads and flags ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelMention:
    """What a report's text says about one level: ``level`` is T1..L5 or S1
    (:data:`~auditor.vocab.SPINE_LEVELS`), or ``*`` for a study-wide statement; ``sentence`` is
    the sentence it came from, as written (untrusted text, escaped by the writers)."""

    level: str
    mention: Mention
    sentence: str


@dataclass(frozen=True)
class ReadRow:
    """One study's original read. ``row`` is the 1-based data row in the reads file.

    ``fracture_reported`` and ``reported_levels`` are what the audit compares with: the
    structured columns and the report text together (a level either one reports is reported).
    ``mentions`` is what the text says per level (:mod:`auditor.reads.text`), ``impression`` the
    text itself, and ``disagreement`` says where text and structured columns differ ("" when they
    agree or only one of them is given).
    """

    row: int
    accession_number: str
    study_uid: str
    image: str
    fracture_reported: bool
    reported_levels: tuple[Level, ...]
    impression: str
    mentions: tuple[LevelMention, ...] = ()
    disagreement: str = ""
    patient_id: str = ""  # as the reads file gives them, shown with the read; not matched on
    study_date: str = ""

    @property
    def key(self) -> str:
        """The first non-empty key of the row, for messages."""
        return self.study_uid or self.accession_number or self.image

    @property
    def covers_every_level(self) -> bool:
        """A fracture is reported without naming any level (not even one outside T10..S1): the
        read then covers every level, because nothing shows that the reader overlooked one."""
        named = any(m.level != STUDY_WIDE and m.mention.reported for m in self.mentions)
        return self.fracture_reported and not self.reported_levels and not named

    def reports(self, level: Level) -> bool:
        """True when the read reports a fracture at ``level`` (affirmed, old or uncertain in
        the text, or named by the structured columns), or covers every level."""
        return self.covers_every_level or level in self.reported_levels

    def mention_of(self, level: str) -> LevelMention | None:
        """The text's mention of ``level`` (a level name or ``*``), or None."""
        return next((m for m in self.mentions if m.level == level), None)


class StudyStatus(str, Enum):
    """Outcome of comparing a study's model calls with its read."""

    LIKELY_MISSED = "likely missed"
    NO_READ = "no read available"
    CONCORDANT_POSITIVE = "concordant positive"
    READ_POSITIVE_MODEL_NEGATIVE = "read positive, model negative"
    CONCORDANT_NEGATIVE = "concordant negative"
    NEGATIVE_NO_READ = "model negative, no read"

    def __str__(self) -> str:
        return self.value

    @property
    def flagged(self) -> bool:
        """True for the statuses listed in the flagged queue."""
        return self in _FLAGGED

    @property
    def rank(self) -> int:
        """Queue order among equal priorities: misses first."""
        return list(StudyStatus).index(self)


_FLAGGED = frozenset(
    {
        StudyStatus.LIKELY_MISSED,
        StudyStatus.NO_READ,
        StudyStatus.CONCORDANT_POSITIVE,
        StudyStatus.READ_POSITIVE_MODEL_NEGATIVE,
    }
)


@dataclass(frozen=True)
class StudyFlag:
    """The flag for one study and the levels behind it."""

    status: StudyStatus
    priority: float
    positive_levels: tuple[Level, ...]
    unreported_levels: tuple[Level, ...]


# -- what a finished scan reports -----------------------------------------------------------------

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
    distance: float | None = None  # the crop's domain-guard distance (None: no guard, no crop)
    out_of_distribution: bool = False  # is_out_of_distribution(distance, the guard's threshold)


@dataclass(frozen=True)
class LevelEvidence:
    """One level of a flagged study: its probability, call and heatmap thumbnail."""

    level: Level
    probability: float
    positive: bool
    reported: bool
    heatmap: str  # run-relative path, "" when none was drawn
    image: str


def study_status_text(status: StudyStatus, out_of_distribution: int) -> str:
    """A study's status as every report and the review workbench word it, saying how many of its
    vertebrae are :data:`OUT_OF_DISTRIBUTION` when any are."""
    if not out_of_distribution:
        return status.value
    noun = "vertebra" if out_of_distribution == 1 else "vertebrae"
    return f"{status.value}; {out_of_distribution} {noun} {OUT_OF_DISTRIBUTION}"


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
    # the image with the strongest finding as a path relative to the run folder, POSIX separators
    # (e.g. "../archive/p1/x.dcm"), for the reports' links; never a file:/// path of the scanning
    # machine; "" when pseudonymised or when no relative path reaches the archive
    image_path: str
    flag: StudyFlag
    read: ReadRow | None
    levels: tuple[LevelEvidence, ...]
    radiograph: str  # run-relative path of the radiograph thumbnail with boxes, "" when none
    out_of_distribution: int = 0  # the study's classified vertebrae marked out of distribution

    @property
    def status(self) -> StudyStatus:
        return self.flag.status

    @property
    def status_text(self) -> str:
        """The status as the reports show it, saying when vertebrae of the study are out of
        distribution (their calls mean little)."""
        return study_status_text(self.status, self.out_of_distribution)

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
        levels = "; ".join(self._level_said(level.value) for level in self.read.reported_levels)
        said = f"fracture reported ({levels or 'levels not named'})"
        return f"{said}; {self.read.disagreement}" if self.read.disagreement else said

    def _level_said(self, level: str) -> str:
        """``L1``, with the report text's mention kind and sentence where the text names it
        (``T12 old: "Old wedge fracture of T12."``)."""
        mention = self.read.mention_of(level) if self.read else None
        if mention is None:
            return level
        return f'{level} {mention.mention.value}: "{mention.sentence}"'


@dataclass(frozen=True)
class CaseImage:
    """One classified image of a study, as the review workbench opens it.

    ``ref`` names the image without saying its path: the keyed hash
    (:meth:`~auditor.reports.pseudonym.Pseudonymiser.ref`) of its archive-relative path under the
    run's salt, which the run journal resolves back to the file. ``image`` is the path as the
    reports show it (pseudonymised on request).
    """

    image: str
    ref: str
    sop_instance_uid: str
    vertebrae: tuple[VertebraFinding, ...]  # every box of the image, classified or not


@dataclass(frozen=True)
class StudyCase:
    """One classified study, flagged or not, with its boxes: what a reviewer opens.

    Identifiers are as the reports show them (pseudonymised on request). ``queue_rank`` is the
    1-based place in the flagged queue, None for a study that is not flagged.
    """

    key: str
    status: StudyStatus
    priority: float
    queue_rank: int | None
    study_uid: str
    accession_number: str
    patient_id: str
    study_date: str
    description: str
    read: ReadRow | None
    images: tuple[CaseImage, ...]


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
class CountTest:
    """The count rule's figures for one archive (:class:`auditor.model.guard.CountRule`, where
    the test is defined): of ``studies`` studies with classified crops, ``studies_flagged`` have
    at least one out of distribution; an archive like the training data would have ``expected``
    on average at most (each crop out with probability at most ``crop_rate``), and ``tail`` is
    the bound's P(K >= studies_flagged). The rule fires when the archive's share of crops out of
    distribution is above ``floor`` and ``tail`` is below ``alpha``."""

    studies: int
    studies_flagged: int
    expected: float
    tail: float
    floor: float
    crop_rate: float
    alpha: float

    def p_text(self) -> str:
        """``tail`` as the reports print it: ``P = 0.00073``, or ``P < 1e-12`` below what the
        computation resolves."""
        return "P < 1e-12" if self.tail < 1e-12 else f"P = {self.tail:.2g}"


@dataclass(frozen=True)
class DomainCheck:
    """What the domain guards said about a whole scan: the classifier's about its crops, the
    localizer's about its images (:mod:`auditor.model.guard`).

    ``guarded`` is False when the classifier bundle has no guard (then nothing is marked and the
    reports say so). Two rules mark the whole archive out of the models' domain: the *share
    rule*, more than ``archive_share`` of the crops, or of the localizer's images, out of
    distribution; and the *count rule* (``count``; None when it was not run), more than its
    floor of the crops out and more studies with a crop out than an archive like the training
    data gives (:class:`CountTest`).
    """

    guarded: bool
    threshold: float | None
    archive_share: float
    crops: int  # classified crops with a distance
    crops_out: int
    images: int = 0  # images the localizer's guard measured (localized, or image-checked)
    images_out: int = 0
    method: str = ""  # how the classifier's guard measures, for the summary
    count: CountTest | None = None  # the count rule's figures (None: not run)

    @property
    def crop_share(self) -> float:
        return self.crops_out / self.crops if self.crops else 0.0

    @property
    def image_share(self) -> float:
        return self.images_out / self.images if self.images else 0.0

    @property
    def share_rule(self) -> bool:
        """More than ``archive_share`` of the crops, or of the localizer's images, are out of
        distribution."""
        return self.crop_share > self.archive_share or self.image_share > self.archive_share

    @property
    def count_rule(self) -> bool:
        """More than the count rule's floor of the crops are out of distribution, and the
        number of studies with a crop out is improbable for an archive like the training data."""
        c = self.count
        return c is not None and self.crop_share > c.floor and c.tail < c.alpha

    @property
    def out_of_domain(self) -> bool:
        """Either rule fired: the flags are not meaningful for this archive."""
        return self.share_rule or self.count_rule

    def reasons(self) -> list[str]:
        """Each rule that fired, with the counts it fired on (empty when none did)."""
        reasons = []
        over = [
            what
            for what, share in (("crops", self.crop_share), ("images", self.image_share))
            if share > self.archive_share
        ]
        if over:
            reasons.append(
                f"share rule: more than {self.archive_share:.0%} of the {' and of the '.join(over)}"
            )
        if self.count_rule and (c := self.count) is not None:
            reasons.append(
                f"count rule: more than {c.floor:.0%} of the crops, and {c.studies_flagged} of "
                f"{c.studies} studies with a crop out where studies like the training data give "
                f"at most {c.expected:.1f} on average, {c.p_text()} < {c.alpha:g}"
            )
        return reasons

    def banner(self) -> str:
        """The warning every report and the terminal show at the top ("" when none is due)."""
        if not self.out_of_domain:
            return ""
        parts = []
        if self.crops_out:
            parts.append(f"{self.crops_out} of {self.crops} vertebra crops ({self.crop_share:.0%})")
        if self.images_out:
            parts.append(f"{self.images_out} of {self.images} images ({self.image_share:.0%})")
        return (
            f"Out of distribution: {' and '.join(parts)} are unlike anything the models were "
            f"trained on ({'; '.join(self.reasons())}). The flags are not meaningful for "
            "these images. Review the studies by hand (tlaudit review), export the reviewed boxes "
            "and labels (tlaudit export-annotations), train a model on them (tlaudit train) and "
            "validate it (tlaudit evaluate) before acting on any flag."
        )

    def summary(self) -> list[tuple[str, str]]:
        """Rows for the reports' summary table."""
        if not self.guarded:
            return [
                (
                    "Domain guard",
                    "off: the model bundle records no domain guard (it was made before tlaudit "
                    "had one), so no crop is checked against the training data; a bundle "
                    "tlaudit train writes now has one",
                )
            ]
        rows = [
            ("Domain guard", self.method),
            (
                "Vertebrae out of distribution",
                f"{self.crops_out} of {self.crops} ({self.crop_share:.1%}); share rule: the "
                f"archive is out of the model's domain above {self.archive_share:.0%}",
            ),
        ]
        if self.images:
            rows.append(
                (
                    "Images out of the localizer's distribution",
                    f"{self.images_out} of {self.images} ({self.image_share:.1%})",
                )
            )
        if (c := self.count) is not None:
            rows.append(
                (
                    "Studies with a vertebra out of distribution",
                    f"{c.studies_flagged} of {c.studies}; studies like the training data give at "
                    f"most {c.expected:.1f} on average (each crop out at most {c.crop_rate:.1%} "
                    f"of the time), {c.p_text()}; count rule: the archive is out of the "
                    f"model's domain when P < {c.alpha:g} and more than {c.floor:.0%} of the "
                    "vertebrae are out",
                )
            )
        rows.append(
            (
                "Archive out of the model's domain",
                f"yes ({'; '.join(self.reasons())})" if self.out_of_domain else "no",
            )
        )
        return rows


@dataclass(frozen=True)
class ReadsCheck:
    """How well the reads file served a scan: its rows, those rejected (with the most common
    reasons), and how many reads matched a scanned study.

    A warning is due when more than ``max_rejected_share`` of the rows were rejected, or when
    studies were scanned and no read matched any of them: the flags then compare the model with
    reads that are mostly missing.
    """

    rows: int  # data rows of the file: reads plus rejected rows
    rejected: int
    matched: int  # reads that matched a scanned study
    studies: int  # studies scanned
    reasons: tuple[tuple[str, int], ...] = ()  # the most common rejection reasons, most first
    max_rejected_share: float = 0.10

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    @property
    def warning_due(self) -> bool:
        return self.rejected_share > self.max_rejected_share or (
            self.studies > 0 and self.matched == 0
        )

    def banner(self) -> str:
        """The warning every report and the terminal show at the top ("" when none is due)."""
        if not self.warning_due:
            return ""
        parts = []
        if self.rejected_share > self.max_rejected_share:
            parts.append(
                f"{self.rejected} of {self.rows} rows of the reads file were rejected "
                f"({self.rejected_share:.0%}, more than {self.max_rejected_share:.0%})"
            )
        if self.studies > 0 and self.matched == 0:
            parts.append(f"no read matches any of the {self.studies} scanned studies")
        reasons = "; ".join(f"{reason} ({n} rows)" for reason, n in self.reasons[:3])
        return (
            f"Reads file: {' and '.join(parts)}. Studies without a read cannot be judged "
            "missed. "
            + (f"Most common reasons: {reasons}. " if reasons else "")
            + "Check the column mapping with tlaudit parse-reads (--reads-column role=COLUMN "
            "names a column) and the Errors list."
        )


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
    cases: tuple[StudyCase, ...] = ()  # every classified study: flagged in queue order, then by key
    domain: DomainCheck | None = None  # what the domain guards said (None: not checked)
    reads_check: ReadsCheck | None = None  # how the reads file served the scan (None: no file)
