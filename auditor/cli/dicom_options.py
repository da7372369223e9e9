"""Options of the DICOM results and the PACS connection, shared by ``tlaudit scan`` and
``tlaudit export-dicom`` so that each is defined (and its help written) once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PACS_PANEL = "PACS (dicomweb+https://...) and DICOM results"
"""The help panel of these options (and of the scan's other PACS options)."""

AuthFileOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help='PACS: JSON file {"token": ...} or {"user": ..., "password": ...}; without it '
        "TLAUDIT_DICOMWEB_TOKEN, or TLAUDIT_DICOMWEB_USER and TLAUDIT_DICOMWEB_PASSWORD.",
        rich_help_panel=PACS_PANEL,
    ),
]
CaBundleOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="PACS: certificate authorities (PEM) to verify its TLS certificate with.",
        rich_help_panel=PACS_PANEL,
    ),
]
DicomOutOption = Annotated[
    Path | None,
    typer.Option(
        file_okay=False,
        help="Write the results as DICOM into this folder: per classified study a TID 1500 SR "
        "(with the reviewer's decisions for a reviewed run), per image a presentation state "
        "and a heatmap secondary capture, per likely-missed study a key object selection "
        "(docs/pacs.md).",
        rich_help_panel=PACS_PANEL,
    ),
]
UidRootOption = Annotated[
    str | None,
    typer.Option(
        "--uid-root",
        help="Your organisation's UID root (ending with a dot) for the UIDs of the DICOM "
        "results; default: 2.25 UUID-derived UIDs.",
        rich_help_panel=PACS_PANEL,
    ),
]
StowOption = Annotated[
    str | None,
    typer.Option(
        help="Also send them with STOW-RS to dicomweb+https://HOST[:PORT]/PATH (credentials "
        "as for reading).",
        rich_help_panel=PACS_PANEL,
    ),
]
PacsAgainOption = Annotated[
    str | None,
    typer.Option(
        "--pacs",
        help="For a PACS run whose cache is gone: the DICOMweb address it scanned "
        "(dicomweb+https://HOST[:PORT]/PATH), from which its images are retrieved again as they "
        "are needed (credentials as for scan: --auth-file or the environment; --ca-bundle).",
        rich_help_panel=PACS_PANEL,
    ),
]
