"""The ``tlaudit`` Typer application and the one place that maps errors to exit codes.

Each command lives in its own module of this package and is registered below. Commands parse and
validate arguments, build a config, and call one library function; library code never imports typer.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor import __version__
from auditor.cli.bench import bench
from auditor.cli.calibrate import calibrate
from auditor.cli.evaluate import evaluate
from auditor.cli.export_dicom import export_dicom_command
from auditor.cli.guard import guard_command, guard_rates_command
from auditor.cli.inventory import inventory_command
from auditor.cli.labels import (
    export_annotations_command,
    import_verdicts_command,
    review_stats_command,
)
from auditor.cli.localize import evaluate_localizer_command, localize_command
from auditor.cli.localizer_train import train_localizer_command
from auditor.cli.parse_reads import parse_reads_command
from auditor.cli.review import review_command
from auditor.cli.scan import scan
from auditor.cli.synth import synth
from auditor.cli.train import train
from auditor.errors import TlauditError, UsageError

app = typer.Typer(
    name="tlaudit",
    help=(
        "Audit archived emergency-room radiographs for thoracolumbar spine fractures the original "
        "read may have missed."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tlaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """tlaudit: batch auditor for missed thoracolumbar fractures on lateral radiographs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


# Commands are registered here, one module each.
# (Commands that are not built yet do not exist.)
app.command("inventory")(inventory_command)
app.command("scan")(scan)
app.command("bench")(bench)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("calibrate")(calibrate)
app.command("guard")(guard_command)
app.command("guard-rates")(guard_rates_command)
app.command("synth")(synth)
app.command("localize")(localize_command)
app.command("train-localizer")(train_localizer_command)
app.command("evaluate-localizer")(evaluate_localizer_command)
app.command("review")(review_command)
app.command("export-annotations")(export_annotations_command)
app.command("import-verdicts")(import_verdicts_command)
app.command("export-dicom")(export_dicom_command)
app.command("review-stats")(review_stats_command)
app.command("parse-reads")(parse_reads_command)


def main() -> None:
    """Console-script entry point: run the app, turning tlaudit errors into exit codes.

    Exit codes: 0 success, 1 a tlaudit error (message printed, no traceback), 2 a usage error
    (bad option or argument; Typer's own usage errors also exit 2).
    """
    try:
        app()
    except UsageError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(2)
    except TlauditError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        sys.exit(1)
    except (OSError, sqlite3.Error) as err:
        # a file-system failure mid-run (disk full, a folder made read-only): what was committed
        # (the scan's journal, the review database) is kept, and --resume goes on from there
        Console(stderr=True).print(
            f"[bold red]error:[/] {escape(describe_os_error(err))}", highlight=False
        )
        sys.exit(1)


def describe_os_error(err: OSError | sqlite3.Error) -> str:
    """A file-system failure in one line: what failed, on which file, and that work is kept."""
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        what = f"{err.strerror or err}{where}"
    else:
        what = f"database: {err}"
    return f"{what}; what was already written is kept (scan --resume goes on from there)"
