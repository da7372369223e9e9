"""Command-line options that widen or narrow triage, shared by ``inventory`` and ``scan``.

Each skip reason that an option can overturn names that option in :data:`TAKEN_BY`, and
:func:`triage_table` prints the counts by reason with it, so that a person reading "view not
recorded" also reads ``--accept-blank-view``.

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
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from auditor.archive.triage import DEFAULT_MODALITIES, Reason  # light: no pydicom, no numpy
from auditor.errors import UsageError
from auditor.vocab import FileStatus

if TYPE_CHECKING:
    from auditor.archive.inventory import InventorySummary
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

#: The option that takes a file triage skipped for a reason (reasons no option overturns, such
#: as a colour image, are absent).
TAKEN_BY: Mapping[Reason, str] = MappingProxyType(
    {
        Reason.NO_VIEW: "--accept-blank-view",
        Reason.NO_BODY_PART: "--accept-blank-body-part (lateral views), --body-part-keyword WORD",
        Reason.OTHER_BODY_PART: "--body-part-keyword WORD, --include-all-radiographs",
        Reason.FRONTAL_VIEW: "--include-all-radiographs",
        Reason.OTHER_VIEW: "--lateral-keyword WORD, --include-all-radiographs",
        Reason.NOT_RADIOGRAPH: "--modality CODE (repeat it for each modality to accept)",
        Reason.NOT_LISTED: "add it to the --files list",
    }
)

_STATUS_STYLE = {
    FileStatus.CANDIDATE: "green",
    FileStatus.SKIPPED: "yellow",
    FileStatus.UNREADABLE: "red",
}


def triage_table(title: str, summary: InventorySummary) -> Table:
    """The counts of an inventory by status and reason, each skip reason with the option that
    would take those files (:data:`TAKEN_BY`)."""
    table = Table(title=escape(title), title_justify="left")
    table.add_column("status")
    table.add_column("reason")
    table.add_column("files", justify="right")
    table.add_column("taken by")
    for status in FileStatus:
        style = _STATUS_STYLE[status]
        table.add_row(
            f"[bold {style}]{status}[/]", "[bold]all[/]", f"[bold]{summary.by_status[status]}[/]"
        )
        for (row_status, reason), count in summary.by_reason.items():
            if row_status is status:
                hint = TAKEN_BY.get(reason, "") if status is FileStatus.SKIPPED else ""
                table.add_row("", escape(str(reason)), str(count), escape(hint))
    table.add_section()
    table.add_row("[bold]total[/]", "", f"[bold]{summary.total}[/]")
    return table


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
