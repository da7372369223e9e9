"""A scan's findings as DICOM objects a PACS stores and shows (``--dicom-out``,
``tlaudit export-dicom``).

For each classified study, from the run's ``findings.csv`` and the source images' headers:

- a **Comprehensive 3D SR** holding a TID 1500 *Imaging Measurement Report* (highdicom
  :class:`~highdicom.sr.Comprehensive3DSR`): the algorithm (model name, version and SHA-256 of its
  weights, the threshold as a parameter); one *Planar ROI Measurements* group per vertebra with
  its box as a closed SCOORD POLYLINE on the source image (referenced by SOP Instance UID), the
  vertebra as finding site, the fracture probability and the call at the operating point; one
  study-level group with the study status. For a reviewed run, also the reviewer's decisions,
  boxes, verdict and comment, with the reviewer as the person observer beside the device
  observer (the groups and every code: :mod:`auditor.pacs.sr_content`);
- a **Grayscale Softcopy Presentation State** per classified image (:func:`presentation_state`)
  drawing the boxes with their level, probability and call, for any PACS viewer;
- a **Secondary Capture** per classified image with a heatmap: the radiograph with the heatmaps
  blended in and the boxes drawn (:mod:`auditor.pacs.heatmap_sc`);
- a **Key Object Selection** document (DCM 113008 *For Peer Review*) for each *likely missed*
  study, listing its images, so that the PACS can build a QA worklist.

New UIDs are ``2.25`` UUID-derived UIDs, or under ``uid_root`` when one is given.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from auditor import __version__
from auditor.errors import TlauditError, UsageError
from auditor.files import csv_unsafe
from auditor.pacs.connect import PacsConnection, PacsError
from auditor.pacs.retry import RetryPolicy, call
from auditor.pacs.sr_content import (
    FRACTURE_CALL,
    LEVEL_SITES,
    PROBABILITY,
    SCHEME,
    STATUS_CODES,
    STUDY_STATUS,
    ReviewedStudy,
    VertebraCall,
    new_uid,
    person_observer,
    reviewed_boxes,
    reviewer_group,
    verdict_group,
    vertebra_group,
)
from auditor.records import StudyStatus
from auditor.vocab import Level

__all__ = [
    "FRACTURE_CALL",
    "LEVEL_SITES",
    "PROBABILITY",
    "SCHEME",
    "STATUS_CODES",
    "Algorithm",
    "DicomOutputError",
    "ImageCalls",
    "WrittenStudy",
    "check_options",
    "key_objects",
    "measurement_report",
    "presentation_state",
    "read_findings",
    "stow",
    "write_dicom_results",
]

logger = logging.getLogger(__name__)

MANUFACTURER = "tlaudit"
#: Longest value of a LO attribute (Series Description): PS3.5 6.2.
MAX_LO = 64


class DicomOutputError(TlauditError):
    """A DICOM result could not be made for a study (the message names it and why)."""


@dataclass(frozen=True)
class Algorithm:
    """The model that made the calls, as the SR identifies it (TID 4019)."""

    name: str
    version: str
    sha256: str
    threshold: float


@dataclass(frozen=True)
class ImageCalls:
    """A source image and its classified vertebrae; ``image`` is its archive-relative path as
    ``findings.csv`` names it, ``study`` the study's key there."""

    path: Path
    status: StudyStatus
    calls: tuple[VertebraCall, ...]
    image: str = ""
    study: str = ""


PixelSource = Callable[["ImageCalls"], AbstractContextManager[Path]]
"""Gives, for as long as its block runs, the file holding an image's pixels."""

#: Attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1) that are Type 2
#: (present, possibly empty) and that the results copy from their source images. Many archived
#: images leave some out; the copy the results are made from gets them empty, as the standard
#: allows, instead of the study failing.
COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


@dataclass(frozen=True)
class WrittenStudy:
    """What was written for one study; ``error`` says why nothing was (then ``report`` is None).

    ``skipped`` names what was left out of the study's objects and why, one line each (a source
    image gone from the archive, a capture that could not be drawn).
    """

    study_uid: str
    report: Path | None
    key_objects: Path | None
    presentation_states: tuple[Path, ...] = ()
    error: str = ""
    captures: tuple[Path, ...] = ()
    skipped: tuple[str, ...] = ()

    def paths(self) -> list[Path]:
        """Every file written for the study."""
        return [
            *([self.report] if self.report else []),
            *self.presentation_states,
            *self.captures,
            *([self.key_objects] if self.key_objects else []),
        ]


def read_findings(run_dir: Path, archive: Path) -> list[ImageCalls]:
    """The classified vertebrae of a run (``findings.csv``), grouped by source image.

    Vertebrae without a probability (crop failed) are left out: the SR reports calls only.

    Raises
    ------
    DicomOutputError
        When the run has no ``findings.csv``, or it lacks a column the results need.
    """
    path = Path(run_dir) / "findings.csv"
    if not path.is_file():
        raise DicomOutputError(f"{path} is missing: DICOM results need a finished scan")
    by_image: dict[str, list[VertebraCall]] = defaultdict(list)
    status: dict[str, StudyStatus] = {}
    study: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            for row in csv.DictReader(handle):
                if not row["probability"]:
                    continue
                image = csv_unsafe(row["image"])
                box = (
                    float(row["x_min"]),
                    float(row["y_min"]),
                    float(row["x_max"]),
                    float(row["y_max"]),
                )
                by_image[image].append(
                    VertebraCall(
                        Level(row["level"]),
                        float(row["probability"]),
                        row["call"] == "positive",
                        box,
                        int(row["box_row"]),
                        row.get("heatmap") or "",
                    )
                )
                status[image] = StudyStatus(row["study_status"])
                study[image] = csv_unsafe(row["study"])
        except (KeyError, ValueError, TypeError) as err:
            raise DicomOutputError(
                f"{path}: not the findings.csv of a tlaudit scan ({type(err).__name__}: {err})"
            ) from err
    return [
        ImageCalls(Path(archive) / image, status[image], tuple(calls), image, study[image])
        for image, calls in by_image.items()
    ]


def measurement_report(
    sources: Sequence[tuple[Dataset, ImageCalls]],
    algorithm: Algorithm,
    *,
    uid_root: str | None = None,
    review: ReviewedStudy | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of one study (see the module docstring).

    Parameters
    ----------
    sources
        Each source image's header (pixels not needed) with its calls; all of one study.
    algorithm
        The model that made the calls.
    uid_root
        Root of the new UIDs (default: ``2.25`` UUID-derived UIDs).
    review
        What a reviewer recorded on the study (:mod:`auditor.pacs.sr_content` says how it is
        written); None for the AI's report alone.
    """
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"weights SHA-256 {algorithm.sha256}", f"threshold {algorithm.threshold:.6f}"],
        manufacturer=MANUFACTURER,
    )
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for source, image in sources:
        on_calls, others = reviewed_boxes(review, image.image, [c.box_row for c in image.calls])
        groups.extend(
            vertebra_group(call, source, algorithm_id, on_calls.get(call.box_row))
            for call in image.calls
        )
        groups.extend(reviewer_group(box, source) for box in others)
    status = sources[0][1].status
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(None), identifier="study"),
            algorithm_id=algorithm_id,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(STUDY_STATUS, STATUS_CODES[status])
            ],
        )
    )
    if review is not None and (verdict := verdict_group(review)) is not None:
        groups.append(verdict)
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=new_uid(uid_root), name=f"tlaudit {__version__}", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=None if review is None else person_observer(review.reviewer),
            observer_device_context=device,
        ),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    whose = "AI, not reviewed" if review is None else "AI and reviewer"
    document = hd.sr.Comprehensive3DSR(
        evidence=[source for source, _ in sources],
        content=report,
        series_instance_uid=new_uid(uid_root),
        series_number=9901,
        sop_instance_uid=new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"tlaudit fracture audit ({whose}): {algorithm.name}"[:MAX_LO],
    )
    if review is not None and not review.reviewer.isascii():
        document.SpecificCharacterSet = "ISO_IR 192"  # the reviewer's name, in UTF-8
    return document


def presentation_state(
    source: Dataset, image: ImageCalls, *, uid_root: str | None = None
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A Grayscale Softcopy Presentation State drawing each vertebra's box on ``source`` with a
    label ``LEVEL P=0.82 +`` (``+`` positive, ``-`` negative at the operating point) above it,
    so that any PACS viewer shows the findings without a plug-in. Positive boxes are on the
    layer ``TLAUDIT POSITIVE``, the others on ``TLAUDIT NEGATIVE``.
    """
    layers = {
        True: hd.pr.GraphicLayer("TLAUDIT POSITIVE", 1, "vertebrae called fractured"),
        False: hd.pr.GraphicLayer("TLAUDIT NEGATIVE", 2, "vertebrae called not fractured"),
    }
    annotations = []
    for positive, layer in layers.items():
        vertebrae = [c for c in image.calls if c.positive is positive]
        if not vertebrae:
            continue
        boxes, labels = [], []
        for vertebra in vertebrae:
            x0, y0, x1, y1 = vertebra.box
            boxes.append(
                hd.pr.GraphicObject(
                    hd.pr.GraphicTypeValues.POLYLINE,
                    np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
                    hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
            sign = "+" if positive else "-"
            labels.append(
                hd.pr.TextObject(
                    f"{vertebra.level.value} P={vertebra.probability:.2f} {sign}",
                    hd.pr.AnnotationUnitsValues.PIXEL,
                    anchor_point=(x0, max(y0 - 2.0, 0.0)),
                    anchor_point_visible=False,
                )
            )
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[source],
                graphic_layer=layer,
                graphic_objects=boxes,
                text_objects=labels,
            )
        )
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=new_uid(uid_root),
        series_number=9903,
        sop_instance_uid=new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="tlaudit",
        software_versions=__version__,
        device_serial_number="none",
        content_label="TLAUDIT",
        content_description="tlaudit vertebra boxes and calls (AI, not reviewed)",
        graphic_annotations=annotations,
        graphic_layers=[layers[True], layers[False]],
        series_description="tlaudit: vertebra boxes and calls",
    )
    # The General Series module's Laterality is Type 2C, required for a paired body part: saying
    # which part the state belongs to (the spine, unpaired) lets a validator (dciodvfy) see that
    # it is not required.
    if str(source.get("BodyPartExamined", "")).strip():
        state.BodyPartExamined = source.BodyPartExamined
    return state


def key_objects(
    sources: Sequence[Dataset], *, uid_root: str | None = None
) -> hd.ko.KeyObjectSelectionDocument:
    """A Key Object Selection document (For Peer Review) listing a likely-missed study's images."""
    selection = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.ForPeerReview,
        referenced_objects=list(sources),
        description="tlaudit: fracture likely missed by the original read",
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=list(sources),
        content=selection,
        series_instance_uid=new_uid(uid_root),
        series_number=9902,
        sop_instance_uid=new_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="tlaudit: likely missed fractures for peer review",
    )


def write_dicom_results(
    run_dir: Path,
    archive: Path,
    algorithm: Algorithm,
    out_dir: Path,
    *,
    uid_root: str | None = None,
    reviews: Mapping[str, ReviewedStudy] | None = None,
    crop_margin: float | None = None,
    pixels: PixelSource | None = None,
) -> list[WrittenStudy]:
    """Write the DICOM results of a run into ``out_dir``: per classified study its SR
    (``STUDY_UID.sr.dcm``), per classified image a presentation state (``SOP_UID.pr.dcm``) and,
    with ``crop_margin``, a heatmap capture where the scan drew heatmaps (``SOP_UID.sc.dcm``),
    and per likely-missed study a KOS (``STUDY_UID.ko.dcm``).

    Parameters
    ----------
    run_dir, archive
        The scan's run folder and the archive it scanned (``findings.csv`` paths are relative
        to it).
    algorithm
        The model that made the calls.
    out_dir
        Where to write.
    uid_root
        Root of the new UIDs.
    reviews
        What a reviewer recorded, by the study's key in ``findings.csv``; a study without an
        entry gets the AI's report alone.
    crop_margin
        The model card's crop margin, to place the heatmaps; None writes no captures.
    pixels
        Where a capture finds its source image's pixels (None: the file in ``archive``). A
        streamed PACS scan's ``archive`` holds each image's header only
        (:mod:`auditor.pacs.stream`), and this retrieves the image again.

    Returns
    -------
    list of WrittenStudy
        One per study, with what was skipped and why: a source image that is gone or not
        DICOM leaves out that image (a study without any leaves out the study), a capture
        that cannot be drawn leaves out that capture.

    Raises
    ------
    DicomOutputError
        When the run has no findings, or no source image could be read at all (PNG/JPEG/TIFF
        exports have no UIDs to reference).
    """
    by_study: dict[str, list[tuple[Dataset, ImageCalls]]] = defaultdict(list)
    skipped: dict[str, list[str]] = defaultdict(list)
    images = read_findings(run_dir, archive)
    for image in images:
        try:
            header = pydicom.dcmread(image.path, stop_before_pixels=True)
            str(header.StudyInstanceUID)  # a file without one is no source to reference
        except FileNotFoundError:
            skipped[image.study].append(f"{image.image}: gone from the archive {archive}")
            continue
        except Exception as err:
            skipped[image.study].append(
                f"{image.image}: cannot read its DICOM header ({type(err).__name__}: {err}); "
                "DICOM results need DICOM sources"
            )
            continue
        for keyword in COPIED_TYPE2:
            if keyword not in header:
                setattr(header, keyword, "")
        by_study[image.study].append((header, image))
    if images and not by_study:
        first = next(iter(skipped.values()))[0]
        raise DicomOutputError(
            f"none of the run's {len(images)} classified images could be read; the first: {first}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for study in dict.fromkeys(image.study for image in images):
        sources = by_study.get(study)
        if not sources:
            reasons = skipped[study]
            logger.warning("no DICOM results for study %s: %s", study, reasons[0])
            written.append(WrittenStudy(study, None, None, error="; ".join(reasons)))
            continue
        review = (reviews or {}).get(study)
        try:
            done = _write_study(sources, algorithm, out_dir, uid_root, review)
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            # a source whose header highdicom cannot build on: this study only, counted and named
            logger.warning("no DICOM results for study %s: %s", study, err)
            done = WrittenStudy(
                str(sources[0][0].StudyInstanceUID),
                None,
                None,
                error=f"{type(err).__name__}: {err}",
            )
        captures, missed = (
            _write_captures(run_dir, sources, algorithm, out_dir, uid_root, crop_margin, pixels)
            if crop_margin is not None and done.report is not None
            else ((), [])
        )
        written.append(
            dataclasses.replace(done, captures=captures, skipped=(*skipped.get(study, ()), *missed))
        )
    return written


def _write_study(
    sources: Sequence[tuple[Dataset, ImageCalls]],
    algorithm: Algorithm,
    out_dir: Path,
    uid_root: str | None,
    review: ReviewedStudy | None,
) -> WrittenStudy:
    study = str(sources[0][0].StudyInstanceUID)
    report = measurement_report(sources, algorithm, uid_root=uid_root, review=review)
    report_path = out_dir / f"{study}.sr.dcm"
    report.save_as(report_path, enforce_file_format=True)
    ko_path = None
    if sources[0][1].status is StudyStatus.LIKELY_MISSED:
        ko_path = out_dir / f"{study}.ko.dcm"
        key_objects([s for s, _ in sources], uid_root=uid_root).save_as(
            ko_path, enforce_file_format=True
        )
    states = []
    for source, image in sources:
        state_path = out_dir / f"{source.SOPInstanceUID}.pr.dcm"
        presentation_state(source, image, uid_root=uid_root).save_as(
            state_path, enforce_file_format=True
        )
        states.append(state_path)
    return WrittenStudy(study, report_path, ko_path, tuple(states))


def _write_captures(
    run_dir: Path,
    sources: Sequence[tuple[Dataset, ImageCalls]],
    algorithm: Algorithm,
    out_dir: Path,
    uid_root: str | None,
    crop_margin: float,
    pixels: PixelSource | None = None,
) -> tuple[tuple[Path, ...], list[str]]:
    """The heatmap captures of one study's images (one new series), and what was skipped."""
    from auditor.errors import ReadError
    from auditor.io.radiograph import read_radiograph
    from auditor.pacs import heatmap_sc

    series = new_uid(uid_root)
    written: list[Path] = []
    missed: list[str] = []
    for source, image in sources:
        if not any(call.heatmap for call in image.calls):
            continue
        calls = [
            (
                call.box,
                f"{call.level.value} {call.probability:.2f}",
                call.positive,
                Path(run_dir) / call.heatmap if call.heatmap else None,
            )
            for call in image.calls
        ]
        try:
            with nullcontext(image.path) if pixels is None else pixels(image) as found:
                radiograph = read_radiograph(found)
            drawn, scale = heatmap_sc.render_capture(
                radiograph, calls, crop_margin, heatmap_sc.MAX_SIDE
            )
            spacing = radiograph.meta.pixel_spacing_mm
            capture = heatmap_sc.secondary_capture(
                source,
                drawn,
                None if spacing is None else (spacing[0] / scale[0], spacing[1] / scale[1]),
                algorithm.name,
                series_uid=series,
                sop_uid=new_uid(uid_root),
            )
            path = out_dir / f"{source.SOPInstanceUID}.sc.dcm"
            capture.save_as(path, enforce_file_format=True)
        except (
            OSError, ReadError, PacsError, ValueError, TypeError, AttributeError, KeyError
        ) as err:  # fmt: skip
            # this capture only (an image that no longer decodes or cannot be retrieved again,
            # a thumbnail gone or damaged)
            reason = f"{image.image}: no heatmap capture ({type(err).__name__}: {err})"
            logger.warning("%s", reason)
            missed.append(reason)
            continue
        written.append(path)
    return tuple(written), missed


def check_options(pseudonymise: bool, dicom_out: Path | None) -> None:
    """Refuse ``--dicom-out`` with ``--pseudonymise``: the DICOM results carry the source
    images' identifiers (patient, study UIDs), which the pseudonymised reports hide."""
    if pseudonymise and dicom_out is not None:
        raise UsageError(
            "--dicom-out writes the source images' identifiers into each SR and key object; "
            "it cannot be combined with --pseudonymise"
        )


def stow(paths: Sequence[Path], connection: PacsConnection, policy: RetryPolicy) -> int:
    """Send written DICOM results to a PACS with STOW-RS, one request per file; returns how
    many it stored.

    Raises
    ------
    PacsAuthError, PacsError
        When the PACS refuses them or cannot be reached after the retries (the files stay in
        ``--dicom-out`` to send again).
    """
    client = connection.client()
    for path in paths:
        dataset = pydicom.dcmread(path)
        answer = call(
            f"STOW-RS {path.name}", functools.partial(client.store_instances, [dataset]), policy
        )
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            raise PacsError(f"STOW-RS {path.name}: the PACS refused it ({failed[0]})")
    return len(paths)
