"""Command-line options that widen or narrow triage, shared by ``inventory`` and ``scan``.

Use the aliases as parameter annotations and pass the values to :func:`build_rules`::

    def command(..., include_all_radiographs: IncludeAllRadiographs = False,
                accept_blank_view: AcceptBlankView = False,
                accept_blank_body_part: AcceptBlankBodyPart = False,
                modality: Modalities = None, body_part_keyword: BodyPartKeywords = None,
                lateral_keyword: LateralKeywords = None, files: FilesList = None):
        rules = build_rules(include_all_radiographs=include_all_radiographs, ...)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from auditor.archive.triage import DEFAULT_MODALITIES  # light: no pydicom, no numpy
from auditor.errors import UsageError

if TYPE_CHECKING:
    from auditor.archive.triage import TriageRules

_PANEL = "Triage (which files are lateral TL-spine candidates)"

IncludeAllRadiographs = Annotated[
    bool,
    typer.Option(
        "--include-all-radiographs",
        help="Take every single-frame greyscale radiograph of an accepted modality, whatever "
        "its body part or view.",
        rich_help_panel=_PANEL,
    ),
]
AcceptBlankView = Annotated[
    bool,
    typer.Option(
        "--accept-blank-view",
        help="Take thoracolumbar images whose view is recorded nowhere (no View Position, no "
        "lateral or frontal word in the descriptions).",
        rich_help_panel=_PANEL,
    ),
]
AcceptBlankBodyPart = Annotated[
    bool,
    typer.Option(
        "--accept-blank-body-part",
        help="Take lateral radiographs whose body region is recorded nowhere.",
        rich_help_panel=_PANEL,
    ),
]
Modalities = Annotated[
    list[str] | None,
    typer.Option(
        "--modality",
        metavar="CODE",
        help=f"Accepted Modality value; repeat for several. Replaces the default "
        f"({', '.join(sorted(DEFAULT_MODALITIES))}).",
        rich_help_panel=_PANEL,
    ),
]
BodyPartKeywords = Annotated[
    list[str] | None,
    typer.Option(
        "--body-part-keyword",
        metavar="WORD",
        help="Extra word that places an image on the thoracolumbar spine (matched in Body Part "
        "Examined, descriptions and protocol name); repeat for several.",
        rich_help_panel=_PANEL,
    ),
]
LateralKeywords = Annotated[
    list[str] | None,
    typer.Option(
        "--lateral-keyword",
        metavar="WORD",
        help="Extra word in descriptions that marks a lateral view; repeat for several.",
        rich_help_panel=_PANEL,
    ),
]
FilesList = Annotated[
    Path | None,
    typer.Option(
        "--files",
        metavar="LISTFILE",
        exists=True,
        dir_okay=False,
        help="Text file of archive-relative paths, one per line (# comments): exactly these "
        "files are candidates, every other file is skipped.",
        rich_help_panel=_PANEL,
    ),
]

_MODALITY_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")  # DICOM CS value


def build_rules(
    *,
    include_all_radiographs: bool = False,
    accept_blank_view: bool = False,
    accept_blank_body_part: bool = False,
    modality: list[str] | None = None,
    body_part_keyword: list[str] | None = None,
    lateral_keyword: list[str] | None = None,
    files: Path | None = None,
) -> TriageRules:
    """Build :class:`TriageRules` from the shared triage options.

    Raises
    ------
    UsageError
        For a modality that is not a DICOM code string or an empty keyword.
    InputFileError
        When the ``--files`` list cannot be read or is empty.
    """
    from auditor.archive.triage import TriageRules, load_file_list

    modalities = DEFAULT_MODALITIES
    if modality:
        codes = [m.strip().upper() for m in modality]
        bad = [m for m in codes if not _MODALITY_CODE.match(m)]
        if bad:
            raise UsageError(
                f"--modality {bad[0]!r} is not a DICOM modality code (e.g. CR, DX, RG)"
            )
        modalities = frozenset(codes)
    for option, words in (
        ("--body-part-keyword", body_part_keyword),
        ("--lateral-keyword", lateral_keyword),
    ):
        if words and any(not re.search(r"[A-Za-z0-9]", w) for w in words):
            raise UsageError(f"{option} needs a word with at least one letter or digit")
    rules = TriageRules(
        modalities=modalities,
        accept_blank_view=accept_blank_view,
        accept_blank_body_part=accept_blank_body_part,
        include_all_radiographs=include_all_radiographs,
        files=load_file_list(files) if files is not None else None,
    )
    return rules.widened(
        tl_keywords=body_part_keyword or (), lateral_keywords=lateral_keyword or ()
    )
