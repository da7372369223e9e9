"""Turning a run's journal into the :class:`~auditor.records.AuditReport` the writers format.

Everything here is derived from the journal (what the model said), the inventory (what files
there are), the box file and the reads file, in a fixed order, so that the same inputs give the
same report whether or not the run was interrupted. Radiograph thumbnails of images with a positive
vertebra were drawn during classification; the few flagged studies without one (read positive,
model negative) have theirs drawn here, which decodes those images once more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from auditor.archive.inventory import FileRecord
from auditor.errors import TlauditError
from auditor.io.radiograph import read_radiograph
from auditor.reads.quality import check_reads
from auditor.records import (
    AuditReport,
    CaseImage,
    DomainCheck,
    ErrorRow,
    FileRow,
    LevelEvidence,
    RadiographMeta,
    ReadRow,
    RowError,
    StudyCase,
    StudyFinding,
    StudyStatus,
    SummaryValue,
    VertebraBox,
    VertebraFinding,
    crop_domain_verdict,
    is_positive,
)
from auditor.reports.pseudonym import Pseudonymiser
from auditor.reports.thumbnails import (
    RADIOGRAPH_DIR,
    radiograph_thumbnail,
    save_jpeg,
    thumbnail_name,
)
from auditor.scan.classify import radiograph_boxes
from auditor.scan.flags import flag_study
from auditor.scan.journal import ImageOutcome, VertebraOutcome
from auditor.scan.reads import ReadIndex
from auditor.scan.viewer import viewer_link
from auditor.vocab import Level

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
    """One file of the archive as the scan's reports need it (built from the inventory)."""

    relative: str
    path: Path
    size: int
    status: str
    reason: str
    meta: RadiographMeta | None

    @classmethod
    def of(cls, record: FileRecord) -> FileEntry:
        """One file's accounting row as the reports carry it (the inventory's triage, not a
        copy)."""
        return cls(
            relative=record.relpath,
            path=record.path,
            size=record.size,
            status=record.status.value,
            reason=record.reason.value + (f": {record.detail}" if record.detail else ""),
            meta=record.meta,
        )


#: Why every crop of an image the image check refused is out of distribution (the Files table).
IMAGE_CHECK_REASON = (
    "the whole image is unlike the localizer's training images (image check): check it is a "
    "lateral thoracolumbar radiograph, or review its calls by hand"
)


@dataclass(frozen=True)
class ScanInputs:
    """Everything a report is assembled from, besides the journal."""

    run_dir: Path
    files: tuple[FileEntry, ...]
    boxes: Mapping[str, tuple[VertebraBox, ...]]  # candidate image -> its valid boxes
    box_errors: tuple[RowError, ...]
    reads: tuple[ReadRow, ...] | None  # None: no reads file
    read_errors: tuple[RowError, ...]
    threshold: float
    pseudonymise: Pseudonymiser
    guard_threshold: float | None = None  # the domain guard's distance threshold (None: no guard)
    # images the image check refused (auditor.scan.locate): every crop of them is out of
    # distribution, whatever its own distance
    refused_images: frozenset[str] = frozenset()
    viewer_url: str = ""  # a viewer URL template with {study_uid} (auditor.scan.viewer)


def study_key(image: str, meta: RadiographMeta | None, boxes: Sequence[VertebraBox]) -> str:
    """The study an image belongs to, as the reports group them: its Study Instance UID, from
    its header or else its boxes, or the image alone."""
    if meta is not None and meta.study_uid:
        return meta.study_uid
    for box in boxes:
        if box.study_uid:
            return box.study_uid
    return f"image:{image}"


def assemble_report(
    inputs: ScanInputs,
    outcomes: Mapping[str, ImageOutcome],
    summary: Sequence[tuple[str, SummaryValue]],
    title: str = "tlaudit scan: missed thoracolumbar fracture audit",
    domain: DomainCheck | None = None,
) -> AuditReport:
    """Build the report of a run from its inputs and its journal's outcomes.

    Parameters
    ----------
    inputs
        Inventory, boxes, reads, threshold and pseudonymiser of the run.
    outcomes
        Committed image outcomes (:meth:`RunJournal.outcomes`).
    summary
        Run parameters, counts and timings for the Summary sheet, in display order.
    title
        Report title.
    domain
        What the domain guards said about the whole run, carried to the writers (their banner).

    Returns
    -------
    AuditReport
        Flagged studies in queue order, all vertebrae, files and errors.
    """
    anon = inputs.pseudonymise

    def shown(image: str) -> str:
        """The image path as reports show it (identifiers in it pseudonymised on request)."""
        return shown_path(anon, image, metas.get(image))

    metas = {f.relative: f.meta for f in inputs.files}
    paths = {f.relative: f.path for f in inputs.files}
    reads = ReadIndex(inputs.reads or ())

    # Group classified images into studies.
    studies: dict[str, list[str]] = {}
    for image in sorted(outcomes):
        key = study_key(image, metas.get(image), inputs.boxes.get(image, ()))
        studies.setdefault(key, []).append(image)

    boxes_by_row = {(image, box.row): box for image, boxes in inputs.boxes.items() for box in boxes}
    vertebrae: list[VertebraFinding] = []
    findings: list[StudyFinding] = []
    cases: dict[str, StudyCase] = {}
    status_counts = dict.fromkeys(StudyStatus, 0)
    matched_reads: set[int] = set()
    for key in sorted(studies):
        images = tuple(studies[key])
        meta = next((metas[i] for i in images if metas.get(i) is not None), None)
        read: ReadRow | None = None
        if inputs.reads is not None:
            read = reads.match(
                meta.study_uid if meta else "", meta.accession_number if meta else "", images
            )
        if read is not None:
            matched_reads.add(read.row)
        best: dict[Level, tuple[float, str, str]] = {}  # level -> (probability, image, heatmap)
        for image in images:
            for v in outcomes[image].vertebrae:
                if v.probability is None:
                    continue
                if v.level not in best or v.probability > best[v.level][0]:
                    best[v.level] = (v.probability, image, v.heatmap)
        flag = flag_study({lv: p for lv, (p, _, _) in best.items()}, inputs.threshold, read)
        status_counts[flag.status] += 1
        shown_key = "image:" + shown(key[6:]) if key.startswith("image:") else anon(key)
        case_images: list[CaseImage] = []
        for image in images:
            image_vertebrae: list[VertebraFinding] = []
            for v in outcomes[image].vertebrae:
                box = boxes_by_row.get((image, v.box_row))
                image_vertebrae.append(
                    VertebraFinding(
                        study=shown_key,
                        image=shown(image),
                        level=v.level,
                        box_row=v.box_row,
                        box=box.xyxy if box else (0.0, 0.0, 0.0, 0.0),
                        box_source=box.source if box else "",
                        box_confidence=box.confidence if box else None,
                        probability=v.probability,
                        positive=is_positive(v.probability, inputs.threshold),
                        reference_label=box.label if box else None,
                        heatmap=v.heatmap,
                        error=v.error,
                        study_status=flag.status,
                        reported=None if read is None else read.reports(v.level),
                        distance=v.distance,
                        out_of_distribution=_out_of_distribution(inputs, image, v),
                    )
                )
            vertebrae += image_vertebrae
            image_meta = metas.get(image)
            case_images.append(
                CaseImage(
                    image=shown(image),
                    ref=anon.ref(image),
                    sop_instance_uid=anon(image_meta.sop_uid) if image_meta else "",
                    vertebrae=tuple(image_vertebrae),
                )
            )
        shown_read = _shown_read(read, anon, [metas.get(i) for i in images])
        cases[shown_key] = StudyCase(
            key=shown_key,
            status=flag.status,
            priority=flag.priority,
            queue_rank=None,
            study_uid=anon(meta.study_uid) if meta else "",
            accession_number=anon(meta.accession_number) if meta else "",
            patient_id=anon(meta.patient_id) if meta else "",
            study_date=meta.study_date if meta else "",
            description=(meta.study_description or meta.series_description) if meta else "",
            read=shown_read,
            images=tuple(case_images),
        )
        if not flag.status.flagged:
            continue
        levels = tuple(
            LevelEvidence(
                level=level,
                probability=p,
                positive=is_positive(p, inputs.threshold),
                reported=read is not None and read.reports(level),
                heatmap=heatmap,
                image=image,
            )
            for level, (p, image, heatmap) in sorted(best.items(), key=lambda kv: kv[0].order)
        )
        focus = _focus_image(levels, flag.unreported_levels, images)
        findings.append(
            StudyFinding(
                key=shown_key,
                study_uid=anon(meta.study_uid) if meta else "",
                accession_number=anon(meta.accession_number) if meta else "",
                patient_id=anon(meta.patient_id) if meta else "",
                patient_name=anon(meta.patient_name) if meta else "",
                study_date=meta.study_date if meta else "",
                description=(meta.study_description or meta.series_description) if meta else "",
                images=tuple(shown(i) for i in (focus, *(i for i in images if i != focus))),
                image_path=_image_link(inputs, meta, paths.get(focus)),
                flag=flag,
                read=shown_read,
                levels=levels,
                radiograph=_radiograph_thumbnail(inputs, focus, paths.get(focus), outcomes[focus]),
                out_of_distribution=sum(
                    v.out_of_distribution for image in case_images for v in image.vertebrae
                ),
            )
        )
    findings.sort(key=lambda s: (-s.flag.priority, s.status.rank, -s.max_probability, s.key))
    vertebrae.sort(key=lambda v: (v.study, v.image, v.level.order, v.box_row))
    queue = [replace(cases.pop(s.key), queue_rank=rank) for rank, s in enumerate(findings, 1)]
    ordered_cases = (*queue, *(cases[key] for key in sorted(cases)))

    files = tuple(_file_row(f, outcomes, inputs, anon) for f in inputs.files)
    errors = _errors(inputs, outcomes, shown)
    n_reads = len(inputs.reads) if inputs.reads is not None else 0
    extra: list[tuple[str, SummaryValue]] = []
    reads_check = None
    if inputs.reads is not None:
        extra.append(("Reads matching no scanned study", n_reads - len(matched_reads)))
        reads_check = check_reads(n_reads, inputs.read_errors, len(matched_reads), len(studies))
    return AuditReport(
        title=title,
        summary=(*summary, *extra),
        status_counts=tuple(status_counts.items()),
        threshold=inputs.threshold,
        studies=tuple(findings),
        vertebrae=tuple(vertebrae),
        files=files,
        errors=errors,
        cases=ordered_cases,
        domain=domain,
        reads_check=reads_check,
    )


def _focus_image(
    levels: Sequence[LevelEvidence], unreported: Sequence[Level], images: Sequence[str]
) -> str:
    """The image holding the strongest finding: unreported positives first, then any level."""
    pool = [lv for lv in levels if lv.level in unreported] or [lv for lv in levels if lv.positive]
    pool = pool or list(levels)
    if not pool:
        return images[0]
    return max(pool, key=lambda lv: (lv.probability, lv.image)).image


def _run_relative_link(image: Path, run_dir: Path) -> str:
    """The path of ``image`` relative to the run folder, with POSIX separators, or "" when there
    is none (another drive on Windows).

    The reports in the run folder link the image this way, not with a ``file:///`` path of the
    scanning machine, so the link still works when the run folder and the archive are moved or
    shared together.
    """
    try:
        # by name, not resolved: an archive file that is a symbolic link is linked where the archive
        # holds it, which is what travels with the archive
        relative = os.path.relpath(image, run_dir)
    except ValueError:  # no relative path between two Windows drives
        return ""
    return Path(relative).as_posix()


def _image_link(inputs: ScanInputs, meta: RadiographMeta | None, path: Path | None) -> str:
    """The study's link in the reports: the PACS viewer's URL when a template is given, else
    the image's path relative to the run folder; "" when pseudonymised (either would name it)."""
    if inputs.pseudonymise.enabled:
        return ""
    if inputs.viewer_url:
        return viewer_link(inputs.viewer_url, meta.study_uid) if meta and meta.study_uid else ""
    return "" if path is None else _run_relative_link(path, inputs.run_dir)


def _radiograph_thumbnail(
    inputs: ScanInputs, image: str, path: Path | None, outcome: ImageOutcome
) -> str:
    """Draw (once) the radiograph with its boxes; return its run-relative path or ""."""
    relative = f"{RADIOGRAPH_DIR}/{thumbnail_name(inputs.pseudonymise.key(image))}"
    target = inputs.run_dir / relative
    if target.is_file():
        return relative
    if path is None or outcome.status != "classified":
        return ""
    try:
        pixels = read_radiograph(path).pixels
    except (TlauditError, OSError, ValueError) as err:
        logger.warning("cannot draw the radiograph thumbnail of %s: %s", image, err)
        return ""
    drawn = radiograph_boxes(inputs.boxes.get(image, ()), outcome.vertebrae, inputs.threshold)
    save_jpeg(radiograph_thumbnail(pixels, drawn), target)
    return relative


def _shown_read(
    read: ReadRow | None, anon: Pseudonymiser, metas: Sequence[RadiographMeta | None]
) -> ReadRow | None:
    """The read as reports carry it, pseudonymised on request: its keys, and the study's
    identifiers wherever they appear as whole words in the free-text impression."""
    if read is None or not anon.enabled:
        return read
    identifiers = [i for meta in metas for i in _identifiers(meta)]
    identifiers += [read.accession_number, read.study_uid, read.patient_id]
    return replace(
        read,
        accession_number=anon(read.accession_number),
        study_uid=anon(read.study_uid),
        patient_id=anon(read.patient_id) if read.patient_id else "",
        image=anon.scrub(read.image, identifiers),
        impression=anon.scrub(read.impression, identifiers, whole_words=True),
        # the sentences each mention came from are report text too
        mentions=tuple(
            replace(m, sentence=anon.scrub(m.sentence, identifiers, whole_words=True))
            for m in read.mentions
        ),
    )


def _identifiers(meta: RadiographMeta | None) -> tuple[str, ...]:
    """What pseudonymisation replaces wherever it occurs: the patient, the accession number and
    every instance UID (archives often name folders and files by Series or SOP Instance UID)."""
    if meta is None:
        return ()
    return (
        meta.patient_id,
        meta.patient_name,
        meta.accession_number,
        meta.study_uid,
        meta.series_uid,
        meta.sop_uid,
    )


def shown_path(anon: Pseudonymiser, relpath: str, meta: RadiographMeta | None) -> str:
    """An archive path as every file of the run folder shows it: pseudonymised on request, by
    the identifiers of its DICOM header, or folder by folder for a file without one
    (:meth:`~auditor.reports.pseudonym.Pseudonymiser.path`)."""
    header = meta is not None and meta.file_format == "dicom"
    return anon.path(relpath, _identifiers(meta), header=header)


def _out_of_distribution(inputs: ScanInputs, image: str, vertebra: VertebraOutcome) -> bool:
    """Whether a classified vertebra is out of distribution: its crop beyond the classifier's
    guard, or its whole image refused by the image check (:func:`crop_domain_verdict`, the rule
    the archive rules count by)."""
    verdict = crop_domain_verdict(
        vertebra.probability,
        vertebra.distance,
        image in inputs.refused_images,
        inputs.guard_threshold,
    )
    return verdict is True


def _file_row(
    entry: FileEntry,
    outcomes: Mapping[str, ImageOutcome],
    inputs: ScanInputs,
    anon: Pseudonymiser,
) -> FileRow:
    meta = entry.meta
    boxes = inputs.boxes
    if entry.status != "candidate":
        scan = "not scanned"
    elif entry.relative not in boxes:
        scan = "not scanned: no vertebra boxes for this image (see the Errors table)"
    elif entry.relative not in outcomes:
        scan = "not scanned yet (run interrupted; use --resume)"
    else:
        outcome = outcomes[entry.relative]
        done = sum(v.probability is not None for v in outcome.vertebrae)
        failed = len(outcome.vertebrae) - done
        if outcome.status != "classified":
            scan = outcome.reason
        else:
            scan = f"classified {done} vertebrae" + (f", {failed} failed" if failed else "")
            out = sum(
                _out_of_distribution(inputs, entry.relative, v)
                for v in outcome.vertebrae
                if v.probability is not None
            )
            if entry.relative in inputs.refused_images:
                scan += f"; all {done} out of distribution: {IMAGE_CHECK_REASON}"
            elif out:
                scan += f"; {out} of {done} out of distribution"
    return FileRow(
        path=shown_path(anon, entry.relative, meta),
        size=entry.size,
        status=entry.status,
        reason=entry.reason,
        scan=scan,
        modality=meta.modality if meta else "",
        body_part=meta.body_part if meta else "",
        view_position=meta.view_position if meta else "",
        description=(meta.series_description or meta.study_description) if meta else "",
    )


def _errors(
    inputs: ScanInputs, outcomes: Mapping[str, ImageOutcome], shown: Callable[[str], str]
) -> tuple[ErrorRow, ...]:
    rows: list[ErrorRow] = [
        ErrorRow(
            e.source,
            e.row or None,
            " ".join(p for p in (shown(e.image), e.level) if p),
            e.reason,
        )
        for e in sorted(inputs.box_errors, key=lambda e: (e.source, e.row))
    ]
    # a rejected read's key is an accession number, a Study Instance UID or an image path of
    # the user's file: an identifier, pseudonymised like every other one on request
    rows += [
        ErrorRow("reads file", e.row, inputs.pseudonymise(e.key), e.reason)
        for e in sorted(inputs.read_errors, key=lambda e: e.row)
    ]
    for image in sorted(outcomes):
        outcome = outcomes[image]
        if outcome.status != "classified":
            rows.append(ErrorRow("image", None, shown(image), outcome.reason))
            continue
        rows += [
            ErrorRow("crop", v.box_row, f"{shown(image)} {v.level.value}", v.error)
            for v in outcome.vertebrae
            if v.error
        ]
    return tuple(rows)
