"""``tlaudit export-dicom``: a finished (and perhaps reviewed) run's results as DICOM (thin
command over :func:`auditor.pacs.export.export_run`).

The review lives in :mod:`auditor.review` and the DICOM writing in :mod:`auditor.pacs`, which do
not import each other; :func:`reviews_for_dicom` hands one to the other, as plain records.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor.cli.dicom_options import (
    AuthFileOption,
    CaBundleOption,
    DicomOutOption,
    PacsAgainOption,
    StowOption,
    UidRootOption,
)
from auditor.errors import UsageError

if TYPE_CHECKING:
    from auditor.pacs.sr_content import ReviewedStudy


def reviews_for_dicom(run_dir: Path, reviewer: str | None) -> dict[str, ReviewedStudy]:
    """What one reviewer recorded on a run, by study key, as the SR writes it: per study the
    boxes they decided or changed (as :func:`auditor.review.decisions.reviewed_vertebrae`
    leaves them), the verdict and the comment. Empty when the run holds no ``review.sqlite``.

    Raises
    ------
    UsageError
        When several reviewers recorded decisions and ``reviewer`` names none of them, or a
        named reviewer recorded nothing.
    InputFileError
        When ``review.sqlite`` or the run's cases cannot be read.
    """
    from auditor.pacs.sr_content import ReviewedStudy, ReviewerBox
    from auditor.review.decisions import reviewed_vertebrae
    from auditor.review.export import choose_reviewers
    from auditor.review.run import load_run
    from auditor.review.store import REVIEW_DB_NAME, open_existing

    if not (Path(run_dir) / REVIEW_DB_NAME).is_file():
        if reviewer is not None:
            raise UsageError(f"--reviewer {reviewer!r}: {run_dir} holds no {REVIEW_DB_NAME}")
        return {}
    run = load_run(run_dir)
    with open_existing(run.run_dir) as store:
        names = store.reviewers()
        if not names:
            return {}
        (name,), _ = choose_reviewers(names, reviewer, consensus=False)
        state = store.state(name)
    reviews: dict[str, ReviewedStudy] = {}
    for case in run.studies:
        boxes = []
        for vertebra in reviewed_vertebrae(case, state):
            changed = vertebra.moved or vertebra.renamed or vertebra.added or vertebra.deleted
            decided = vertebra.decision is not None or vertebra.ao_type
            if not (changed or decided or vertebra.genant_grade is not None):
                continue
            if vertebra.image not in run.sources:
                continue  # an image the journal does not know: nothing to reference
            boxes.append(
                ReviewerBox(
                    image=run.source(vertebra.image),
                    box_row=None if vertebra.original is None else vertebra.original.box_row,
                    level=vertebra.level,
                    xyxy=vertebra.xyxy,
                    decision=vertebra.decision,
                    ao_type=vertebra.ao_type,
                    genant_grade=vertebra.genant_grade,
                    moved=vertebra.moved,
                    renamed=vertebra.renamed,
                    added=vertebra.added,
                    deleted=vertebra.deleted,
                )
            )
        study = state.studies.get(case.key)
        verdict = study.verdict if study else None
        comment = study.comment if study else ""
        if boxes or verdict is not None or comment:
            reviews[case.key] = ReviewedStudy(name, tuple(boxes), verdict, comment)
    return reviews


def export_dicom_command(
    run_dir: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="The run folder of a scan (its --out)."),
    ],
    dicom_out: DicomOutOption = None,
    stow: StowOption = None,
    auth_file: AuthFileOption = None,
    ca_bundle: CaBundleOption = None,
    uid_root: UidRootOption = None,
    model: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            help="The model bundle the run was scanned with (default: the bundled classifier).",
        ),
    ] = None,
    reviewer: Annotated[
        str | None,
        typer.Option(help="Whose review the SR carries, when several people reviewed the run."),
    ] = None,
    pacs: PacsAgainOption = None,
) -> None:
    """Write a finished run's results as DICOM (SR, presentation states, heatmap captures, key
    objects), with the reviewer's decisions where the run was reviewed; --stow also sends them.

    A PACS run's SR, presentation states and key objects are made from the headers the scan
    kept; the heatmap captures need the images' pixels, retrieved again from --pacs unless the
    scan kept its cache (--keep-cache). Not for a pseudonymised run.
    """
    from auditor.pacs.export import export_run, run_fingerprint
    from auditor.pacs.scan import results_from_options
    from auditor.scan.config import ScanEvent

    if dicom_out is None:
        raise UsageError("export-dicom writes into the folder --dicom-out names; give it")
    pseudonymised = bool(run_fingerprint(run_dir).get("pseudonymise"))
    results = results_from_options(dicom_out, stow, auth_file, ca_bundle, pseudonymised, uid_root)
    assert results is not None  # dicom_out is given
    connection = None
    if pacs is not None:
        from auditor.pacs.connect import connection_from_options

        connection = connection_from_options(pacs, auth_file, ca_bundle)
    reviews = reviews_for_dicom(run_dir, reviewer)
    console = Console()
    if reviews:
        name = next(iter(reviews.values())).reviewer
        console.print(
            f"review: {escape(name)}'s decisions on {len(reviews)} studies", highlight=False
        )

    def on_event(event: ScanEvent) -> None:
        console.print(escape(event.message), highlight=False)

    export_run(run_dir, results, model, reviews, on_event, connection)
