"""``tlaudit review``: open a scan's run folder in the reviewer's workbench (thin command)."""

from __future__ import annotations

import contextlib
import getpass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from auditor.cli.dicom_options import AuthFileOption, CaBundleOption, PacsAgainOption
from auditor.errors import UsageError


def review_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            dir_okay=True,
            metavar="RUN_DIR",
            help="Run folder of a finished scan (holds cases.json and journal.sqlite).",
        ),
    ],
    reviewer: Annotated[
        str | None,
        typer.Option(
            "--reviewer",
            help="Name to record decisions under (default: your login name). Each reviewer "
            "sees only their own decisions.",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    ] = 0,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but 127.0.0.1 / localhost / ::1 exposes the "
            "workbench beyond this machine (a warning is printed).",
        ),
    ] = "127.0.0.1",
    sample_unflagged: Annotated[
        int,
        typer.Option(
            "--sample-unflagged",
            min=0,
            metavar="K",
            help="Also queue a random sample of K unflagged studies (drawn once per reviewer "
            "and kept), to estimate what the scan misses.",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the unflagged sample.")] = 0,
    pacs: PacsAgainOption = None,
    auth_file: AuthFileOption = None,
    ca_bundle: CaBundleOption = None,
) -> None:
    """Serve the review workbench for RUN_DIR on this machine and print its URL.

    The URL carries a session token every request needs (random, or TLAUDIT_REVIEW_TOKEN).

    Decisions are saved to RUN_DIR/review.sqlite as they are made. Stop with Ctrl+C.

    A PACS run's images are shown from its cache (scan --keep-cache), or retrieved from --pacs
    as the reviewer opens them.
    """
    from auditor.review.serve import ServeConfig, serve, session_token

    name = reviewer if reviewer is not None else getpass.getuser()
    if not name.strip():
        raise UsageError("--reviewer must not be empty")
    fetch = None
    if pacs is not None:
        from auditor.pacs.connect import connection_from_options
        from auditor.pacs.export import run_images

        connection = connection_from_options(pacs, auth_file, ca_bundle)
        fetch = run_images(run_dir, connection)
    config = ServeConfig(
        run_dir=run_dir,
        reviewer=name,
        host=host,
        port=port,
        sample_unflagged=sample_unflagged,
        seed=seed,
        fetch=fetch,
    )
    errors = Console(stderr=True)

    def announce(url: str) -> None:
        typer.echo(f"Review workbench for {run_dir} (reviewer {name}); open:")
        typer.echo(url)

    def warn(message: str) -> None:
        errors.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a reviewer stops it
        serve(config, session_token(), announce=announce, warn=warn)
