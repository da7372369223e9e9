"""A study as one reviewer leaves it: the scan's boxes with the reviewer's changes applied.

:func:`reviewed_vertebrae` merges a study of ``cases.json`` (:class:`~auditor.records.StudyCase`)
with a reviewer's :class:`~auditor.review.store.ReviewState`: each box the scan classified, moved,
renamed, decided or deleted as the reviewer left it, then the boxes the reviewer added.
:func:`propose_verdict` turns those decisions into the study verdict the workbench proposes (the
reviewer may change it). The workbench, ``export-annotations`` and ``review-stats`` all read a
review through these two functions, so the rules live here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.records import StudyCase, VertebraFinding
from auditor.review.store import ReviewState, VertebraReview, box_id
from auditor.vocab import Level, StudyVerdict, VertebraDecision


@dataclass(frozen=True)
class ReviewedVertebra:
    """One vertebra box of a study after review.

    ``image`` is the image's reference (``CaseImage.ref``) and ``box`` the box id
    (:func:`~auditor.review.store.box_id`, or ``new-...`` for an added box). ``level`` and
    ``xyxy`` are the effective ones (the reviewer's where they renamed or moved it);
    ``original`` is the scan's finding, None for an added box, and ``probability`` its fracture
    probability (None for an added box or a box the scan could not classify).
    """

    study: str
    image: str
    box: str
    level: Level
    xyxy: tuple[float, float, float, float]
    probability: float | None
    original: VertebraFinding | None
    decision: VertebraDecision | None
    ao_type: str
    genant_grade: int | None
    moved: bool
    renamed: bool
    added: bool
    deleted: bool

    @property
    def label(self) -> int | None:
        """The training label this vertebra gives (1, 0), None when it gives none: deleted,
        undecided or ``unsure``."""
        if self.deleted or self.decision is None:
            return None
        return self.decision.label


def reviewed_vertebrae(case: StudyCase, state: ReviewState) -> tuple[ReviewedVertebra, ...]:
    """Every vertebra box of ``case`` as the reviewer of ``state`` leaves it.

    The scan's boxes come first, image by image in the study's order and cranial to caudal by
    the scan's level within an image, then the boxes the reviewer added (in the same order, by
    their level). Deleted boxes are included with ``deleted=True``. Reviews of boxes or images
    the study does not hold (a store written against another scan) are ignored.
    """
    refs = [image.ref for image in case.images]
    result: list[ReviewedVertebra] = []
    for image in case.images:
        for finding in sorted(image.vertebrae, key=lambda v: (v.level.order, v.box_row)):
            key = (case.key, image.ref, box_id(finding.box_row))
            review = state.vertebrae.get(key) or VertebraReview(case.key, image.ref, key[2])
            level = review.level or finding.level
            xyxy = review.xyxy or finding.box
            result.append(
                ReviewedVertebra(
                    study=case.key,
                    image=image.ref,
                    box=key[2],
                    level=level,
                    xyxy=xyxy,
                    probability=finding.probability,
                    original=finding,
                    decision=review.decision,
                    ao_type=review.ao_type,
                    genant_grade=review.genant_grade,
                    moved=tuple(xyxy) != tuple(finding.box),
                    renamed=level != finding.level,
                    added=False,
                    deleted=review.deleted,
                )
            )
    added = [
        review
        for (study, image_ref, _), review in state.vertebrae.items()
        if study == case.key
        and review.added
        and image_ref in refs
        and review.level is not None
        and review.xyxy is not None
    ]
    added.sort(key=lambda r: (refs.index(r.image), r.level.order if r.level else 0, r.box))
    for review in added:
        assert review.level is not None and review.xyxy is not None  # filtered above
        result.append(
            ReviewedVertebra(
                study=case.key,
                image=review.image,
                box=review.box,
                level=review.level,
                xyxy=review.xyxy,
                probability=None,
                original=None,
                decision=review.decision,
                ao_type=review.ao_type,
                genant_grade=review.genant_grade,
                moved=False,
                renamed=False,
                added=True,
                deleted=review.deleted,
            )
        )
    return tuple(result)


def propose_verdict(
    case: StudyCase, vertebrae: tuple[ReviewedVertebra, ...]
) -> StudyVerdict | None:
    """The study verdict the vertebra decisions point to, or None when they point to none yet.

    Deleted boxes are left out. The rules, in order:

    1. A ``fracture`` decision at a level the read did not report: **confirmed miss**. A read
       that reported a fracture without naming levels covers every level, as in the flag rules
       (:mod:`auditor.scan.flags`), so its fractures are never missed.
    2. ``fracture`` decisions, all at levels the read reported: **already known**.
    3. No fracture and at least one ``unsure``: **unsure**.
    4. Every box decided ``no_fracture``: **not a fracture**.
    5. Otherwise (nothing decided, or some boxes still undecided): None.

    A study without a read gets no proposal for a fracture (there is no read to have missed it
    or known it); rules 3 to 5 apply to it as to any study.
    """
    live = [v for v in vertebrae if not v.deleted]
    fractures = [v for v in live if v.decision is VertebraDecision.FRACTURE]
    if fractures:
        read = case.read
        if read is None:
            return None
        if read.fracture_reported and not read.reported_levels:
            return StudyVerdict.ALREADY_KNOWN
        reported = set(read.reported_levels) if read.fracture_reported else set()
        if any(v.level not in reported for v in fractures):
            return StudyVerdict.CONFIRMED_MISS
        return StudyVerdict.ALREADY_KNOWN
    if any(v.decision is VertebraDecision.UNSURE for v in live):
        return StudyVerdict.UNSURE
    if live and all(v.decision is VertebraDecision.NO_FRACTURE for v in live):
        return StudyVerdict.NOT_A_FRACTURE
    return None
