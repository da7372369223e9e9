"""From review to labels: ``export-annotations``, ``import-verdicts`` and ``review-stats``, and
the ``--annotations RUN_DIR`` that ``train``, ``evaluate`` and ``calibrate`` accept.

Thin commands over :mod:`auditor.review.export`, :mod:`auditor.review.verdicts` and
:mod:`auditor.review.stats`; those modules load at call time, so ``tlaudit --help`` stays quick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.errors import UsageError

if TYPE_CHECKING:
    from auditor.review.export import AnnotationExport
    from auditor.review.stats import ReviewerStats

#: The file ``--annotations RUN_DIR`` exports a run folder's decisions to, inside ``--out``.
REVIEW_ANNOTATIONS_NAME = "review_annotations.csv"

RunDirArgument = Annotated[
    Path,
    typer.Argument(exists=True, file_okay=False, help="The run folder of a scan (its --out)."),
]

#: ``--annotations`` of ``train``, ``evaluate`` and ``calibrate``: a box file or a reviewed run.
AnnotationsOption = Annotated[
    Path,
    typer.Option(
        exists=True,
        help="Box file (CSV or COCO JSON) with a label per vertebra, or a reviewed run folder: "
        f"its decided vertebrae are exported to {REVIEW_ANNOTATIONS_NAME} in --out first (the "
        "only reviewer's, or what several reviewers agree on) and ARCHIVE must be the run's.",
    ),
]


def annotations_file(annotations: Path, archive: Path, out: Path, console: Console) -> Path:
    """The box file ``--annotations`` names: itself, or for a reviewed run folder the export of
    its decisions into ``out`` (:data:`REVIEW_ANNOTATIONS_NAME`).

    A run folder with one reviewer gives that reviewer's decisions; with several, the vertebrae
    they agree on (``export-annotations --consensus``). Says which on ``console``.

    Raises
    ------
    UsageError
        When the folder is not a scan's run folder, nobody has reviewed it, or ``archive`` is not
        the archive the run scanned (the exported image paths are relative to that one).
    """
    if not annotations.is_dir():
        return annotations
    from auditor.reports.cases import CASES_NAME
    from auditor.review.export import collect_annotations, write_annotations
    from auditor.review.run import load_run
    from auditor.review.store import open_existing

    if not (annotations / CASES_NAME).is_file():
        raise UsageError(
            f"--annotations {annotations} is a folder without {CASES_NAME}: give a box file or "
            "the run folder of a scan"
        )
    run = load_run(annotations)
    if run.archive.resolve() != Path(archive).resolve():
        raise UsageError(
            f"the run folder {annotations} scanned the archive {run.archive}, not {archive}: "
            "pass that archive as ARCHIVE (the exported image paths are relative to it)"
        )
    with open_existing(run.run_dir) as store:
        names = store.reviewers()
        if not names:
            raise UsageError(f"nobody has recorded a decision in {annotations} yet")
        states = [store.state(name) for name in names]
    export = collect_annotations(run, states, consensus=len(names) > 1)
    target = out / REVIEW_ANNOTATIONS_NAME
    write_annotations(export.rows, target)
    whose = (
        f"what the {len(names)} reviewers agree on ({', '.join(names)})"
        if export.consensus
        else f"reviewer {names[0]}"
    )
    console.print(
        f"--annotations: the decisions of {escape(whose)} in {escape(str(annotations))}, "
        f"exported to {escape(str(target))}",
        highlight=False,
    )
    _print_export(console, export)
    return target


def _print_export(console: Console, export: AnnotationExport) -> None:
    counts = export.counts()
    console.print(
        f"{len(export.rows)} rows: {counts['fracture']} fracture, "
        f"{counts['no_fracture']} no_fracture",
        highlight=False,
    )
    if export.skipped:
        table = Table(title="vertebrae not exported")
        table.add_column("reason")
        table.add_column("boxes", justify="right")
        for reason, count in export.skipped.items():
            table.add_row(escape(reason), str(count))
        console.print(table)


def export_annotations_command(
    run_dir: RunDirArgument,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", dir_okay=False, help="Box file to write: .csv, or .json for COCO."
        ),
    ],
    reviewer: Annotated[str | None, typer.Option(help="Export this reviewer's decisions.")] = None,
    consensus: Annotated[
        bool,
        typer.Option(
            "--consensus",
            help="Export only the vertebrae every reviewer who decided them agrees on.",
        ),
    ] = False,
) -> None:
    """Write the decided vertebrae of a reviewed run as a labelled box file.

    Only fracture and no fracture decisions become rows; undecided, unsure and deleted boxes are
    counted, never written. Without --reviewer or --consensus the run must have one reviewer.
    The file's image paths are relative to the archive the run scanned: pass that archive to
    train, evaluate or calibrate.
    """
    from auditor.review.export import export_annotations

    console = Console()
    result = export_annotations(run_dir, out, reviewer=reviewer, consensus=consensus)
    whose = (
        "consensus of " + ", ".join(result.export.reviewers)
        if result.export.consensus
        else "reviewer " + result.export.reviewers[0]
    )
    console.print(f"[bold green]annotations:[/] {escape(str(result.path))} ({escape(whose)})")
    _print_export(console, result.export)
    console.print(f"archive: {escape(str(result.archive))}", highlight=False)


def import_verdicts_command(
    run_dir: RunDirArgument,
    workbook: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="The reviewed audit.xlsx."),
    ],
    reviewer: Annotated[
        str, typer.Option(help="The reviewer name the workbook's decisions are recorded under.")
    ] = "excel",
) -> None:
    """Read a workbook's study verdicts, comments and vertebra decisions into the run's review.

    Empty cells change nothing and values the review already holds are skipped, so importing
    the same workbook twice records nothing new. Rows that cannot be imported are listed.
    """
    from auditor.review.verdicts import import_verdicts

    console = Console()
    result = import_verdicts(run_dir, workbook, reviewer)
    recorded = ", ".join(f"{count} {field}s" for field, count in result.recorded.items())
    console.print(
        f"[bold green]imported[/] for {escape(result.reviewer)}: {recorded}; "
        f"{result.unchanged} already recorded",
        highlight=False,
    )
    if result.problems:
        table = Table(title=f"{len(result.problems)} rows not imported")
        for column in ("sheet", "row", "item", "reason"):
            table.add_column(column)
        for problem in result.problems:
            table.add_row(
                problem.sheet,
                "" if problem.row is None else str(problem.row),
                escape(problem.item),
                escape(problem.reason),
            )
        console.print(table)


def review_stats_command(
    run_dir: RunDirArgument,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", dir_okay=False, help="Also write the figures to this JSON file."),
    ] = None,
) -> None:
    """Report what the review found: flags reviewed, confirmed misses, the positive predictive
    value of likely missed, the miss rate in the unflagged sample, and inter-reader agreement.

    The definitions are in the docstring of auditor/review/stats.py.
    """
    from auditor.files import write_text_atomic
    from auditor.review.stats import review_stats

    console = Console()
    stats = review_stats(run_dir)
    rows = [
        *stats.reviewers,
        *([stats.overall] if stats.overall and len(stats.reviewers) > 1 else []),
    ]
    if not rows:
        console.print("nobody has recorded a decision in this run yet")
    else:
        table = Table(title=f"review of {escape(str(run_dir))}")
        table.add_column("figure")
        for row in rows:
            table.add_column(escape(row.reviewer), justify="right")
        for label, cell in _FIGURES[: None if len(rows) > 1 else -1]:
            table.add_row(label, *(cell(row) for row in rows))
        console.print(table)
    if stats.agreement:
        table = Table(title="inter-reader agreement (Cohen's kappa)")
        for column in ("reviewers", "per vertebra", "per study"):
            table.add_column(column)
        pairs = [stats.agreement[i : i + 2] for i in range(0, len(stats.agreement), 2)]
        for vertebra, study in pairs:
            table.add_row(escape(" / ".join(vertebra.reviewers)), str(vertebra), str(study))
        console.print(table)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(stats.to_json(), indent=1) + "\n")
        console.print(f"[bold green]figures:[/] {escape(str(json_out))}")


def _reviewed(row: ReviewerStats) -> str:
    return f"{row.flagged_reviewed} of {row.flagged}"


def _sample(row: ReviewerStats) -> str:
    if row.sample_size == 0:
        return "no sample drawn"
    return f"{row.sample_miss_rate.n} of {row.sample_size} reviewed"


_FIGURES = (
    ("flags reviewed", _reviewed),
    ("confirmed misses (flagged)", lambda row: str(row.confirmed_misses)),
    ("PPV of likely missed", lambda row: str(row.ppv_likely_missed)),
    ("unflagged sample", _sample),
    ("miss rate in the sample", lambda row: str(row.sample_miss_rate)),
    ("studies left out (reviewers disagree)", lambda row: str(row.disagreements)),  # overall
)
