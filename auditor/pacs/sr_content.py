"""The content of tlaudit's TID 1500 report: its codes, and the measurement groups of the AI's
calls and of a reviewer's decisions.

Codes. Standard ones wherever DICOM or SNOMED CT has the concept:

- finding site of each vertebra: SNOMED CT (pydicom's ``codes.SCT.T10Vertebra`` ...
  ``codes.SCT.L5Vertebra``; ``codes.SCT.Sacrum`` for the S1 anchor);
- the fracture probability: DCM 122157 *Probability*, unit UCUM ``1``;
- the reviewer's decision on a vertebra: concept SCT 125605004 *Fracture of bone*, value
  SCT 52101004 *Present* (fracture), 272519000 *Absent* (no fracture) or 82334004
  *Indeterminate* (unsure);
- the Genant grade's value: SCT 17621005 *Normal* (grade 0), 255604002 *Mild* (1),
  6736007 *Moderate* (2), 24484000 *Severe* (3), Genant's own names for his grades;
- the reviewer's comment on a study: DCM 121106 *Comment* (TEXT);
- the AI's call at the operating point (a value, not the concept): SCT *Present* / *Absent*.

The private scheme :data:`SCHEME` (``99TLAUDIT``; DICOM leaves designators beginning with
``99`` to local schemes) only where neither has the concept: the concept names *Fracture call
at operating point* (``FRACTURE_CALL``), *Audit study status* (``STUDY_STATUS``) and its values
(the :class:`~auditor.records.StudyStatus` names), *Genant grade* (``GENANT_GRADE``), *AO Spine
type* (``AO_TYPE``, values ``AO_A0`` ... ``AO_C``), *Box edited by reviewer* (``BOX_EDIT``,
values ``MOVED``, ``RENAMED``, ``ADDED``, ``DELETED``) and *Review verdict* (``REVIEW_VERDICT``,
values the :class:`~auditor.vocab.StudyVerdict` names: ``CONFIRMED_MISS`` ...).

Groups. The AI's vertebra group (:func:`vertebra_group` without a review) holds the box the scan
classified, the vertebra as finding site, the probability and the call, under the algorithm's
identification. A vertebra the reviewer decided, moved, renamed or deleted keeps the AI's
probability (still under the algorithm, with the scan's level as its finding site) and call,
and gains the reviewer's evaluations; its region and finding site are then the reviewer's (a
deleted box keeps the scan's, marked ``DELETED``). A box the reviewer drew, or a box the scan
could not classify, is a group of the reviewer's evaluations only. Everything not under the
algorithm's identification is the reviewer's, who is the report's person observer
(:func:`person_observer`); the study's verdict and comment are one more group,
*study review* (:func:`verdict_group`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from auditor.records import StudyStatus
from auditor.vocab import GENANT_GRADES, Level, StudyVerdict, VertebraDecision

SCHEME = "99TLAUDIT"
"""Private coding scheme designator of tlaudit's own concepts."""

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

#: The reviewer's decision on a vertebra: SNOMED CT *Fracture of bone* (125605004; not in
#: pydicom's dictionary), valued with :data:`DECISION_CODES`.
FRACTURE = hd.sr.CodedConcept("125605004", "SCT", "Fracture of bone")
DECISION_CODES: Mapping[VertebraDecision, hd.sr.CodedConcept] = MappingProxyType(
    {
        VertebraDecision.FRACTURE: hd.sr.CodedConcept.from_code(codes.SCT.Present),
        VertebraDecision.NO_FRACTURE: hd.sr.CodedConcept.from_code(codes.SCT.Absent),
        VertebraDecision.UNSURE: hd.sr.CodedConcept.from_code(codes.SCT.Indeterminate),
    }
)
GENANT_GRADE = hd.sr.CodedConcept("GENANT_GRADE", SCHEME, "Genant semiquantitative grade")
GENANT_CODES: Mapping[int, hd.sr.CodedConcept] = MappingProxyType(
    {
        grade: hd.sr.CodedConcept.from_code(code)
        for grade, code in zip(
            GENANT_GRADES,
            (codes.SCT.Normal, codes.SCT.Mild, codes.SCT.Moderate, codes.SCT.Severe),
            strict=True,
        )
    }
)
AO_TYPE = hd.sr.CodedConcept("AO_TYPE", SCHEME, "AO Spine thoracolumbar injury type")
BOX_EDIT = hd.sr.CodedConcept("BOX_EDIT", SCHEME, "Box edited by reviewer")
BOX_EDITS: Mapping[str, hd.sr.CodedConcept] = MappingProxyType(
    {
        edit: hd.sr.CodedConcept(edit.upper(), SCHEME, f"{edit.capitalize()} by reviewer")
        for edit in ("moved", "renamed", "added", "deleted")
    }
)
REVIEW_VERDICT = hd.sr.CodedConcept("REVIEW_VERDICT", SCHEME, "Review verdict")
VERDICT_CODES: Mapping[StudyVerdict, hd.sr.CodedConcept] = MappingProxyType(
    {
        verdict: hd.sr.CodedConcept(verdict.name, SCHEME, verdict.value.capitalize())
        for verdict in StudyVerdict
    }
)
COMMENT = hd.sr.CodedConcept.from_code(codes.DCM.Comment)


def ao_code(ao_type: str) -> hd.sr.CodedConcept:
    """The private code of an AO Spine type (``A0`` ... ``C``): ``AO_A0`` *AO Spine type A0*."""
    return hd.sr.CodedConcept(f"AO_{ao_type}", SCHEME, f"AO Spine type {ao_type}")


def new_uid(root: str | None) -> str:
    """A new UID under ``root``, or a ``2.25`` UUID-derived one."""
    return str(generate_uid(prefix=root) if root else generate_uid(prefix=None))


@dataclass(frozen=True)
class VertebraCall:
    """One classified vertebra of ``findings.csv`` (``box_row`` is the scan's box row)."""

    level: Level
    probability: float
    positive: bool
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels
    box_row: int = 0
    heatmap: str = ""  # the run folder's heatmap thumbnail, "" when none was drawn


@dataclass(frozen=True)
class ReviewerBox:
    """One vertebra box as the reviewer left it, for the report.

    ``image`` is the image's archive-relative path (as ``findings.csv`` names it), ``box_row``
    the scan's box row (None for a box the reviewer drew); ``level`` and ``xyxy`` are the
    effective ones (the reviewer's where they renamed or moved the box).
    """

    image: str
    box_row: int | None
    level: Level
    xyxy: tuple[float, float, float, float]
    decision: VertebraDecision | None = None
    ao_type: str = ""
    genant_grade: int | None = None
    moved: bool = False
    renamed: bool = False
    added: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class ReviewedStudy:
    """What one reviewer recorded on one study: the boxes they decided or changed, the verdict
    and the comment."""

    reviewer: str
    boxes: tuple[ReviewerBox, ...] = ()
    verdict: StudyVerdict | None = None
    comment: str = ""


def box_region(xyxy: tuple[float, float, float, float], source: Dataset) -> hd.sr.ImageRegion:
    """A box as a closed SCOORD POLYLINE on ``source`` (referenced by SOP Instance UID)."""
    x0, y0, x1, y1 = xyxy
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )


def review_evaluations(box: ReviewerBox) -> list[hd.sr.QualitativeEvaluation]:
    """The reviewer's evaluations of one box: the edit marks, then (unless it was deleted) the
    decision, the AO type and the Genant grade where given."""
    edits = [
        edit
        for edit, done in (
            ("added", box.added),
            ("moved", box.moved),
            ("renamed", box.renamed),
            ("deleted", box.deleted),
        )
        if done
    ]
    evaluations = [hd.sr.QualitativeEvaluation(BOX_EDIT, BOX_EDITS[edit]) for edit in edits]
    if box.deleted:
        return evaluations
    if box.decision is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(FRACTURE, DECISION_CODES[box.decision]))
    if box.ao_type:
        evaluations.append(hd.sr.QualitativeEvaluation(AO_TYPE, ao_code(box.ao_type)))
    if box.genant_grade is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(GENANT_GRADE, GENANT_CODES[box.genant_grade])
        )
    return evaluations


def vertebra_group(
    call: VertebraCall,
    source: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
    review: ReviewerBox | None = None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """The group of one classified vertebra: the AI's probability and call, and the reviewer's
    evaluations and box when ``review`` is given (see the module docstring)."""
    ai_site = hd.sr.FindingSite(LEVEL_SITES[call.level])
    level, xyxy = call.level, call.box
    if review is not None and not review.deleted:
        level, xyxy = review.level, review.xyxy
    evaluations = [
        hd.sr.QualitativeEvaluation(
            FRACTURE_CALL,
            hd.sr.CodedConcept.from_code(codes.SCT.Present if call.positive else codes.SCT.Absent),
        )
    ]
    if review is not None:
        evaluations.extend(review_evaluations(review))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(None), identifier=f"{level.value} vertebral body"
        ),
        referenced_region=box_region(xyxy, source),
        finding_sites=[hd.sr.FindingSite(LEVEL_SITES[level])],
        # a group the reviewer changed is not the algorithm's alone: only its measurement is
        algorithm_id=algorithm if review is None else None,
        measurements=[
            hd.sr.Measurement(
                name=PROBABILITY,
                value=round(call.probability, 6),
                unit=NO_UNITS,
                algorithm_id=algorithm,
                finding_sites=[ai_site],
            )
        ],
        qualitative_evaluations=evaluations,
    )


def reviewer_group(
    box: ReviewerBox, source: Dataset
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """The group of a box the AI did not classify (drawn by the reviewer, or one whose crop
    failed): the reviewer's evaluations only."""
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=new_uid(None), identifier=f"{box.level.value} vertebral body"
        ),
        referenced_region=box_region(box.xyxy, source),
        finding_sites=[hd.sr.FindingSite(LEVEL_SITES[box.level])],
        qualitative_evaluations=review_evaluations(box),
    )


def verdict_group(review: ReviewedStudy) -> hd.sr.MeasurementsAndQualitativeEvaluations | None:
    """The *study review* group: the verdict (a coded evaluation) and the comment (DCM 121106
    TEXT); None when the reviewer gave neither."""
    if review.verdict is None and not review.comment:
        return None
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(None), identifier="study review"),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(REVIEW_VERDICT, VERDICT_CODES[review.verdict])
        ]
        if review.verdict is not None
        else None,
    )
    if review.comment:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=COMMENT,
                value=review.comment,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


_PN_SEPARATORS = re.compile(r"[\\=]")


def person_name(reviewer: str) -> str:
    """A reviewer's name as a DICOM PN value: ``\\`` (value separator) and ``=`` (group
    separator) become spaces, and so do carets beyond the four a PN may have; a name without
    carets is one component, the family name, and gets the trailing caret that says so
    (``Anne Smith^``)."""
    name = _PN_SEPARATORS.sub(" ", reviewer)
    if name.count("^") > 4:
        name = name.replace("^", " ")
    name = name.strip() or "unnamed"
    return name if "^" in name else f"{name}^"


def person_observer(reviewer: str) -> hd.sr.ObserverContext:
    """The reviewer as the report's person observer (TID 1003)."""
    return hd.sr.ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=person_name(reviewer)
        ),
    )


def reviewed_boxes(
    review: ReviewedStudy | None, image: str, classified: Sequence[int]
) -> tuple[dict[int, ReviewerBox], list[ReviewerBox]]:
    """The reviewer's boxes of ``image``: those of boxes the scan classified (by box row), and
    the others (drawn by the reviewer, or boxes the scan could not classify; deleted ones of
    these are left out: the AI reported nothing on them)."""
    if review is None:
        return {}, []
    rows = set(classified)
    on_calls: dict[int, ReviewerBox] = {}
    others: list[ReviewerBox] = []
    for box in (box for box in review.boxes if box.image == image):
        if box.box_row is not None and box.box_row in rows:
            on_calls[box.box_row] = box
        elif not box.deleted:
            others.append(box)
    return on_calls, others
