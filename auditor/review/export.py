"""``export-annotations``: the decided vertebrae of a reviewed run as a box file with labels.

The output is a box file in the formats ``train``, ``evaluate`` and ``calibrate`` read
(:mod:`auditor.boxes`: CSV with :data:`~auditor.boxes.BOX_FILE_COLUMNS`, or COCO JSON): one row per
vertebra a reviewer decided ``fracture`` or ``no_fracture``, with the corrected box and level, the
AO type and Genant grade, the study's identifiers, the image's archive-relative path (from the run
journal, never the pseudonymised one the reports show) and the reviewer.

What never becomes a row, each counted by reason: a box nobody decided (an unreviewed vertebra is
never a silent negative), an ``unsure`` decision, a deleted box, a box whose reviewers disagree
(with ``consensus``), two boxes of one image that end at the same level (both refused: which one
is that level is for a person to settle), and an image the run journal does not know.

Consensus (:func:`collect_annotations` with ``consensus=True``): a box is exported when every
reviewer who decided it (fracture, no fracture, unsure, or deleted) gave the same label at the same
level; its box is the mean of their boxes, its AO type and Genant grade are kept where they all
agree. A box only one reviewer decided (every added box among them) is exported on that reviewer's
word.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.boxes import BOX_FILE_COLUMNS
from auditor.errors import UsageError
from auditor.files import csv_safe, write_text_atomic
from auditor.records import StudyCase
from auditor.review.decisions import ReviewedVertebra, reviewed_vertebrae
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import ReviewState, open_existing
from auditor.vocab import Level

logger = logging.getLogger(__name__)

#: Why a reviewed box did not become a row; the keys of :attr:`AnnotationExport.skipped`.
SKIP_UNDECIDED = "not decided"
SKIP_UNSURE = "unsure"
SKIP_DELETED = "deleted"
SKIP_DISAGREE = "reviewers disagree"
SKIP_SAME_LEVEL = "two boxes of one image at the same level"
SKIP_UNKNOWN_IMAGE = "image not in the run journal"

_LABEL_NAMES = {1: "fracture", 0: "no_fracture"}


@dataclass(frozen=True)
class AnnotationRow:
    """One exported vertebra: a labelled box-file row, and the review keys it came from."""

    study: str  # the study's key in cases.json
    ref: str  # the image reference
    box: str  # the box id
    image: str  # archive-relative path
    sop_instance_uid: str
    level: Level
    xyxy: tuple[float, float, float, float]
    label: int  # 1 fracture, 0 no fracture
    ao_type: str
    genant_grade: int | None
    patient_id: str
    study_uid: str
    reviewer: str  # one name, or the agreeing reviewers joined by ";"


@dataclass(frozen=True)
class AnnotationExport:
    """What an export holds: the rows, the boxes left out by reason, and whose decisions."""

    rows: tuple[AnnotationRow, ...]
    skipped: Mapping[str, int]
    reviewers: tuple[str, ...]
    consensus: bool

    def counts(self) -> dict[str, int]:
        """Rows by label name (``fracture``, ``no_fracture``)."""
        found = Counter(_LABEL_NAMES[row.label] for row in self.rows)
        return {name: found.get(name, 0) for name in _LABEL_NAMES.values()}


def choose_reviewers(
    store_reviewers: Sequence[str], reviewer: str | None, consensus: bool
) -> tuple[tuple[str, ...], bool]:
    """Whose decisions an export takes: ``(reviewers, consensus)``.

    A named ``reviewer`` is that one; ``consensus`` is every reviewer; neither is the only
    reviewer of the run.

    Raises
    ------
    UsageError
        When both are asked for, the named reviewer recorded nothing, nobody recorded anything,
        or several reviewers did and neither was asked for.
    """
    if reviewer is not None and consensus:
        raise UsageError("give either --reviewer or --consensus, not both")
    if not store_reviewers:
        raise UsageError("no reviewer has recorded a decision in this run yet")
    if reviewer is not None:
        if reviewer not in store_reviewers:
            raise UsageError(
                f"reviewer {reviewer!r} recorded nothing in this run; reviewers: "
                f"{', '.join(store_reviewers)}"
            )
        return (reviewer,), False
    if consensus:
        return tuple(store_reviewers), True
    if len(store_reviewers) > 1:
        raise UsageError(
            f"{len(store_reviewers)} reviewers recorded decisions ({', '.join(store_reviewers)}): "
            "name one with --reviewer, or take the vertebrae they agree on with --consensus"
        )
    return tuple(store_reviewers), False


def collect_annotations(
    run: ReviewRun, states: Sequence[ReviewState], consensus: bool = False
) -> AnnotationExport:
    """The labelled rows the reviews of ``states`` give for ``run`` (see the module docstring).

    With one state (and ``consensus`` False) the rows are that reviewer's decisions; with
    ``consensus`` the rows are the boxes every reviewer who decided them agrees on.
    """
    skipped: Counter[str] = Counter()
    rows: list[AnnotationRow] = []
    for case in run.studies:
        by_key: dict[tuple[str, str], list[tuple[str, ReviewedVertebra]]] = {}
        for state in states:
            for vertebra in reviewed_vertebrae(case, state):
                by_key.setdefault((vertebra.image, vertebra.box), []).append(
                    (state.reviewer, vertebra)
                )
        for (ref, _box), reviews in by_key.items():
            row, reason = _row(run, case, ref, reviews)
            if row is None:
                skipped[reason] += 1
            else:
                rows.append(row)
    rows = _drop_same_level(rows, skipped)
    return AnnotationExport(
        rows=tuple(rows),
        skipped=dict(sorted(skipped.items())),
        reviewers=tuple(state.reviewer for state in states),
        consensus=consensus,
    )


def _row(
    run: ReviewRun,
    case: StudyCase,
    ref: str,
    reviews: list[tuple[str, ReviewedVertebra]],
) -> tuple[AnnotationRow | None, str]:
    """The row one box gives, or None and the reason it gives none."""
    decided = [(name, v) for name, v in reviews if v.deleted or v.decision is not None]
    if not decided:
        return None, SKIP_UNDECIDED
    labelled = [(name, v) for name, v in decided if v.label is not None]
    if not labelled:
        deleted = sum(v.deleted for _, v in decided)
        if deleted == len(decided):
            return None, SKIP_DELETED
        return None, SKIP_UNSURE if deleted == 0 else SKIP_DISAGREE
    if len(labelled) < len(decided) or len({(v.label, v.level) for _, v in labelled}) > 1:
        return None, SKIP_DISAGREE
    try:
        source = run.source(ref)
    except KeyError:
        return None, SKIP_UNKNOWN_IMAGE
    first = labelled[0][1]
    n = len(labelled)
    corners = [sum(v.xyxy[i] for _, v in labelled) / n for i in range(4)]
    ao_types = {v.ao_type for _, v in labelled}
    grades = {v.genant_grade for _, v in labelled}
    image = next(image for image in case.images if image.ref == ref)
    assert first.label is not None
    return (
        AnnotationRow(
            study=case.key,
            ref=ref,
            box=first.box,
            image=source,
            sop_instance_uid=image.sop_instance_uid,
            level=first.level,
            xyxy=(corners[0], corners[1], corners[2], corners[3]),
            label=first.label,
            ao_type=ao_types.pop() if len(ao_types) == 1 else "",
            genant_grade=grades.pop() if len(grades) == 1 else None,
            patient_id=case.patient_id,
            study_uid=case.study_uid,
            reviewer=";".join(sorted(name for name, _ in labelled)),
        ),
        "",
    )


def _drop_same_level(rows: list[AnnotationRow], skipped: Counter[str]) -> list[AnnotationRow]:
    """Refuse every row of an image whose level another row of that image also has."""
    seen = Counter((row.image, row.level) for row in rows)
    kept = [row for row in rows if seen[(row.image, row.level)] == 1]
    if len(kept) < len(rows):
        skipped[SKIP_SAME_LEVEL] += len(rows) - len(kept)
    return kept


# -- writing --------------------------------------------------------------------------------------


def _corner(value: float) -> float:
    return round(value, 2)


def annotations_csv(rows: Sequence[AnnotationRow]) -> str:
    """``rows`` as box-file CSV text (:data:`~auditor.boxes.BOX_FILE_COLUMNS`), every text cell
    formula-safe (:func:`~auditor.files.csv_safe`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BOX_FILE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        x_min, y_min, x_max, y_max = (_corner(c) for c in row.xyxy)
        record: dict[str, object] = {
            "image": row.image,
            "sop_instance_uid": row.sop_instance_uid,
            "level": row.level.value,
            "x_min": x_min,
            "y_min": y_min,
            "x_max": x_max,
            "y_max": y_max,
            "label": _LABEL_NAMES[row.label],
            "ao_type": row.ao_type,
            "genant_grade": "" if row.genant_grade is None else row.genant_grade,
            "patient_id": row.patient_id,
            "study_uid": row.study_uid,
            "source": "file",
            "confidence": "",
            "reviewer": row.reviewer,
        }
        writer.writerow({key: csv_safe(value) for key, value in record.items()})
    return buffer.getvalue()


def annotations_coco(rows: Sequence[AnnotationRow]) -> str:
    """``rows`` as COCO JSON text: one image per archive path, one category per level, one
    annotation per row with its label and the other fields as ``attributes``. The run does not
    record image sizes, so images carry no ``width`` and ``height``."""
    images: dict[str, int] = {}
    image_items: list[dict[str, object]] = []
    for row in rows:
        if row.image not in images:
            images[row.image] = len(images) + 1
            image_items.append(
                {
                    "id": images[row.image],
                    "file_name": row.image,
                    "sop_instance_uid": row.sop_instance_uid,
                }
            )
    categories = {level: number for number, level in enumerate(Level, start=1)}
    annotations = []
    for number, row in enumerate(rows, start=1):
        x_min, y_min, x_max, y_max = (_corner(c) for c in row.xyxy)
        annotations.append(
            {
                "id": number,
                "image_id": images[row.image],
                "category_id": categories[row.level],
                "bbox": [x_min, y_min, _corner(x_max - x_min), _corner(y_max - y_min)],
                "attributes": {
                    "label": _LABEL_NAMES[row.label],
                    "ao_type": row.ao_type,
                    "genant_grade": row.genant_grade,
                    "patient_id": row.patient_id,
                    "study_uid": row.study_uid,
                    "reviewer": row.reviewer,
                },
            }
        )
    document = {
        "info": {"description": "tlaudit export-annotations"},
        "images": image_items,
        "categories": [{"id": n, "name": level.value} for level, n in categories.items()],
        "annotations": annotations,
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def write_annotations(rows: Sequence[AnnotationRow], target: Path) -> None:
    """Write ``rows`` to ``target`` atomically: CSV for ``.csv``, COCO JSON for ``.json``.

    Raises
    ------
    UsageError
        When ``target`` ends in neither.
    """
    suffix = Path(target).suffix.lower()
    if suffix == ".csv":
        write_text_atomic(target, annotations_csv(rows))
    elif suffix == ".json":
        write_text_atomic(target, annotations_coco(rows))
    else:
        raise UsageError(
            f"{target}: the annotations file must end in .csv or .json, not {suffix!r}"
        )


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_annotations` wrote: the file, the run's archive (the ``ARCHIVE`` the
    file's image paths are relative to) and the export itself."""

    path: Path
    archive: Path
    export: AnnotationExport


def export_annotations(
    run_dir: Path, target: Path, reviewer: str | None = None, consensus: bool = False
) -> ExportResult:
    """Export the decided vertebrae of a reviewed run folder to ``target`` (``.csv``/``.json``).

    Parameters
    ----------
    run_dir
        A scan's run folder with a ``review.sqlite``.
    target
        The box file to write.
    reviewer, consensus
        Whose decisions (see :func:`choose_reviewers`).

    Raises
    ------
    InputFileError
        When the run folder or its review store cannot be read.
    UsageError
        When the target's type is unknown, or the reviewers cannot be chosen.
    """
    run = load_run(run_dir)
    with open_existing(run.run_dir) as store:
        names, consensus = choose_reviewers(store.reviewers(), reviewer, consensus)
        states = [store.state(name) for name in names]
    export = collect_annotations(run, states, consensus)
    write_annotations(export.rows, target)
    logger.info(
        "exported %d rows from %s to %s (skipped %s)",
        len(export.rows),
        run_dir,
        target,
        dict(export.skipped),
    )
    return ExportResult(path=Path(target), archive=run.archive, export=export)
