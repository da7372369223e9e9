"""A scan's findings as DICOM objects a PACS stores and shows (``--dicom-out``).

For each classified study, from the run's ``findings.csv`` and the source images' headers:

- a **Comprehensive 3D SR** holding a TID 1500 *Imaging Measurement Report* (highdicom
  :class:`~highdicom.sr.Comprehensive3DSR`): the algorithm (model name, version and SHA-256 of its
  weights, the threshold as a parameter); one *Planar ROI Measurements* group per vertebra with
  its box as a closed SCOORD POLYLINE on the source image (referenced by SOP Instance UID), the
  vertebra as finding site, the fracture probability (DCM 122157 *Probability*, unit ``1``) and
  the call at the operating point as a qualitative evaluation (SCT 52101004 *Present* /
  272519000 *Absent*); one study-level group with the study status;
- a **Grayscale Softcopy Presentation State** per classified image (:func:`presentation_state`)
  drawing the boxes with their level, probability and call, for any PACS viewer;
- a **Key Object Selection** document (DCM 113008 *For Peer Review*) for each *likely missed*
  study, listing its images, so that the PACS can build a QA worklist.

Codes: the vertebrae are the SNOMED CT codes of pydicom's code dictionary
(``codes.SCT.T10Vertebra`` ... ``codes.SCT.L5Vertebra``, and ``codes.SCT.Sacrum`` for the S1
anchor); concepts DICOM has no code for (the fracture call, the study status) use the private
coding scheme :data:`SCHEME` (DICOM reserves designators starting with ``99`` for local
schemes). New UIDs are ``2.25`` UUID-derived UIDs, or under ``uid_root`` when one is given.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from auditor import __version__
from auditor.errors import TlauditError, UsageError
from auditor.files import csv_unsafe
from auditor.pacs.connect import PacsConnection, PacsError
from auditor.pacs.retry import RetryPolicy, call
from auditor.records import StudyStatus
from auditor.vocab import Level

logger = logging.getLogger(__name__)

SCHEME = "99TLAUDIT"
"""Private coding scheme designator of tlaudit's own concepts."""

MANUFACTURER = "tlaudit"

#: The finding site of each level: SNOMED CT codes from pydicom's code dictionary.
LEVEL_SITES: Mapping[Level, hd.sr.CodedConcept] = MappingProxyType(
    {
        level: hd.sr.CodedConcept.from_code(code)
        for level, code in (
            (Level.T10, codes.SCT.T10Vertebra),
            (Level.T11, codes.SCT.T11Vertebra),
            (Level.T12, codes.SCT.T12Vertebra),
            (Level.L1, codes.SCT.L1Vertebra),
            (Level.L2, codes.SCT.L2Vertebra),
            (Level.L3, codes.SCT.L3Vertebra),
            (Level.L4, codes.SCT.L4Vertebra),
            (Level.L5, codes.SCT.L5Vertebra),
            (Level.S1, codes.SCT.Sacrum),
        )
    }
)

FRACTURE_CALL = hd.sr.CodedConcept("FRACTURE_CALL", SCHEME, "Fracture call at operating point")
STUDY_STATUS = hd.sr.CodedConcept("STUDY_STATUS", SCHEME, "Audit study status")
STATUS_CODES: Mapping[StudyStatus, hd.sr.CodedConcept] = MappingProxyType(
    {
        status: hd.sr.CodedConcept(status.name, SCHEME, status.value.capitalize())
        for status in StudyStatus
    }
)
PROBABILITY = hd.sr.CodedConcept.from_code(codes.DCM.Probability)
NO_UNITS = hd.sr.CodedConcept.from_code(codes.UCUM.NoUnits)


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
class VertebraCall:
    """One classified vertebra of ``findings.csv``."""

    level: Level
    probability: float
    positive: bool
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels


@dataclass(frozen=True)
class ImageCalls:
    """A source image and its classified vertebrae."""

    path: Path
    status: StudyStatus
    calls: tuple[VertebraCall, ...]


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
    """What was written for one study; ``error`` says why nothing was (then ``report`` is None)."""

    study_uid: str
    report: Path | None
    key_objects: Path | None
    presentation_states: tuple[Path, ...] = ()
    error: str = ""

    def paths(self) -> list[Path]:
        """Every file written for the study."""
        return [
            *([self.report] if self.report else []),
            *self.presentation_states,
            *([self.key_objects] if self.key_objects else []),
        ]


def read_findings(run_dir: Path, archive: Path) -> list[ImageCalls]:
    """The classified vertebrae of a run (``findings.csv``), grouped by source image.

    Vertebrae without a probability (crop failed) are left out: the SR reports calls only.

    Raises
    ------
    DicomOutputError
        When the run has no ``findings.csv``.
    """
    path = Path(run_dir) / "findings.csv"
    if not path.is_file():
        raise DicomOutputError(f"{path} is missing: --dicom-out needs a finished scan")
    by_image: dict[str, list[VertebraCall]] = defaultdict(list)
    status: dict[str, StudyStatus] = {}
    with path.open(newline="", encoding="utf-8") as handle:
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
                    Level(row["level"]), float(row["probability"]), row["call"] == "positive", box
                )
            )
            status[image] = StudyStatus(row["study_status"])
    return [
        ImageCalls(Path(archive) / image, status[image], tuple(calls))
        for image, calls in by_image.items()
    ]


def _uid(root: str | None) -> str:
    return str(generate_uid(prefix=root) if root else generate_uid(prefix=None))


def _vertebra_group(
    call: VertebraCall, source: Dataset, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    x0, y0, x1, y1 = call.box
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    site = hd.sr.FindingSite(LEVEL_SITES[call.level])
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(None), identifier=f"{call.level.value} vertebral body"
        ),
        referenced_region=region,
        finding_sites=[site],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=PROBABILITY,
                value=round(call.probability, 6),
                unit=NO_UNITS,
                algorithm_id=algorithm,
                finding_sites=[site],
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                FRACTURE_CALL,
                hd.sr.CodedConcept.from_code(
                    codes.SCT.Present if call.positive else codes.SCT.Absent
                ),
            )
        ],
    )


def measurement_report(
    sources: Sequence[tuple[Dataset, ImageCalls]],
    algorithm: Algorithm,
    *,
    uid_root: str | None = None,
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
        groups.extend(_vertebra_group(call, source, algorithm_id) for call in image.calls)
    status = sources[0][1].status
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(None), identifier="study"),
            algorithm_id=algorithm_id,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(STUDY_STATUS, STATUS_CODES[status])
            ],
        )
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(uid_root), name=f"tlaudit {__version__}", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source for source, _ in sources],
        content=report,
        series_instance_uid=_uid(uid_root),
        series_number=9901,
        sop_instance_uid=_uid(uid_root),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"tlaudit fracture audit (AI, not reviewed): {algorithm.name}",
    )


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
        series_instance_uid=_uid(uid_root),
        series_number=9903,
        sop_instance_uid=_uid(uid_root),
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
        series_instance_uid=_uid(uid_root),
        series_number=9902,
        sop_instance_uid=_uid(uid_root),
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
) -> list[WrittenStudy]:
    """Write the SR of every classified study, a presentation state per classified image, and a
    KOS per likely-missed study into ``out_dir`` as ``STUDY_UID.sr.dcm``,
    ``SOP_INSTANCE_UID.pr.dcm`` and ``STUDY_UID.ko.dcm``.

    Raises
    ------
    DicomOutputError
        When the run has no findings, or a source image is not DICOM (PNG/JPEG/TIFF exports
        have no UIDs to reference).
    """
    by_study: dict[str, list[tuple[Dataset, ImageCalls]]] = defaultdict(list)
    for image in read_findings(run_dir, archive):
        try:
            header = pydicom.dcmread(image.path, stop_before_pixels=True)
        except Exception as err:
            raise DicomOutputError(
                f"{image.path}: cannot read its DICOM header ({err}); DICOM results need DICOM "
                "sources"
            ) from err
        for keyword in COPIED_TYPE2:
            if keyword not in header:
                setattr(header, keyword, "")
        by_study[str(header.StudyInstanceUID)].append((header, image))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for study, sources in by_study.items():
        try:
            written.append(_write_study(study, sources, algorithm, out_dir, uid_root))
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            # a source whose header highdicom cannot build on: this study only, counted and named
            logger.warning("no DICOM results for study %s: %s", study, err)
            written.append(WrittenStudy(study, None, None, error=f"{type(err).__name__}: {err}"))
    return written


def _write_study(
    study: str,
    sources: Sequence[tuple[Dataset, ImageCalls]],
    algorithm: Algorithm,
    out_dir: Path,
    uid_root: str | None,
) -> WrittenStudy:
    report = measurement_report(sources, algorithm, uid_root=uid_root)
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
