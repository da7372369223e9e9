"""``tlaudit scan``: audit an archive for missed thoracolumbar fractures (thin command)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from auditor.cli.dicom_options import (
    PACS_PANEL,
    AuthFileOption,
    CaBundleOption,
    DicomOutOption,
    StowOption,
    UidRootOption,
)
from auditor.cli.model_options import (
    HeatmapMethodOption,
    OperatingPointOption,
    PrecisionOption,
    point_name,
)
from auditor.cli.triage_options import (
    AcceptBlankBodyPart,
    AcceptBlankView,
    BodyPartKeywords,
    FilesList,
    IncludeAllRadiographs,
    LateralKeywords,
    Modalities,
    build_rules,
    triage_table,
)
from auditor.errors import InputFileError, TlauditError, UsageError
from auditor.records import DomainCheck
from auditor.vocab import DEFAULT_HEATMAP, BoxFormat, Device, Engine, HeatmapMode, Precision


def scan(
    archive: Annotated[
        str,
        typer.Argument(
            help="Archive folder to audit, or a PACS as dicomweb+https://HOST[:PORT]/PATH or, "
            "over DIMSE, dicom://CALLED_AET@HOST:PORT (docs/pacs.md).",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", file_okay=False, help="Run directory for reports and journal."),
    ],
    boxes: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help=(
                "Box file (CSV or COCO JSON), one box per vertebra. Without it the vertebra "
                "localizer finds the boxes (kept as RUN_DIR/localizer_boxes.csv)."
            ),
        ),
    ] = None,
    box_format: Annotated[
        BoxFormat,
        typer.Option(
            help="How the CSV box file states its boxes: corners (x_min..y_max, CVAT's "
            "xtl..ybr), xywh (top-left x, y, width, height) or percent (Label Studio: x, y, "
            "width, height in % of original_width / original_height), all but percent in "
            "pixels; auto decides from the columns.",
        ),
    ] = BoxFormat.AUTO,
    localizer: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Localizer bundle used without --boxes (default: the bundled one).",
        ),
    ] = None,
    reads: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Original reads to compare the model with: a RIS/PACS export (CSV in any common "
            "encoding and delimiter, or .xlsx) with report text and/or fracture_reported; check "
            "how it is read with tlaudit parse-reads.",
        ),
    ] = None,
    reads_column: Annotated[
        list[str] | None,
        typer.Option(
            help="ROLE=COLUMN: the reads file's column for a role (accession_number, study_uid, "
            "key, image, patient_id, study_date, text, fracture_reported, reported_levels) where "
            "its name is not recognised; repeatable (two text columns are read as one report).",
        ),
    ] = None,
    reads_columns: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A file of ROLE=COLUMN lines (or a JSON object) naming the reads file's columns.",
        ),
    ] = None,
    reads_rules: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Report rules (JSON, the shape of auditor/reads/report_rules.json) extending "
            "the shipped words and phrases; repeatable.",
        ),
    ] = None,
    strict_reads: Annotated[
        bool,
        typer.Option(
            "--strict-reads",
            help="Exit 1 (after writing the reports) when the reads warning is due: more than "
            "10 % of its rows rejected, or no read matches a scanned study.",
        ),
    ] = False,
    viewer_url: Annotated[
        str,
        typer.Option(
            "--viewer-url",
            help="Link each study in the reports to the PACS viewer through this URL template, "
            "{study_uid} replaced, e.g. https://pacs.example/ohif/viewer?StudyInstanceUIDs="
            "{study_uid} (not with --pseudonymise).",
        ),
    ] = "",
    strict_domain: Annotated[
        bool,
        typer.Option(
            "--strict-domain",
            help="Exit 1 (after writing the reports) when the archive is out of the model's "
            "domain (more than the guard's share of crops out of distribution); refuse a model "
            "without a domain guard.",
        ),
    ] = False,
    image_check: Annotated[
        bool | None,
        typer.Option(
            "--image-check/--no-image-check",
            help="With --boxes: check each whole image with the localizer's domain guard as its "
            "vertebrae are classified, and mark every crop of an image unlike its training "
            "images out of distribution (default: on when the localizer bundle has a guard).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(exists=True, help="Model bundle folder (default: the bundled classifier)."),
    ] = None,
    operating_point: OperatingPointOption = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Custom probability threshold instead."),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(
            help="Where to run the networks: the fracture classifier and, without --boxes, the "
            "vertebra localizer."
        ),
    ] = Device.AUTO,
    precision: PrecisionOption = Precision.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, help="Vertebrae per batch.")] = 32,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes decoding images (default: one per spare core for the crops, "
            "one per core, at most 4, ahead of the localizer).",
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="Where images are decoded, cut into crops and (on Ray) classified: worker "
            "processes on this machine, or tasks on a Ray cluster (needs: pip install "
            "'tlaudit[ray]').",
        ),
    ] = Engine.LOCAL,
    model_in_workers: Annotated[
        bool,
        typer.Option(
            "--model-in-workers",
            help="The local worker processes classify the crops they cut (one model and one "
            "thread each) instead of this process running the model beside them; CPU only. "
            "Same findings; faster on a 2-core CPU with --workers 2 (docs/speed.md).",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: the cluster to join ('auto' or the head's HOST:PORT); "
            "default: a new Ray instance on this machine, for this scan.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted scan in --out.")
    ] = False,
    pseudonymise: Annotated[
        bool,
        typer.Option(
            "--pseudonymise",
            help="Replace patient ID, name, accession and study UID by hashes, also inside "
            "paths and the read's impression.",
        ),
    ] = False,
    pseudonym_salt: Annotated[
        str | None,
        typer.Option(
            envvar="TLAUDIT_PSEUDONYM_SALT",
            help="Secret salt for --pseudonymise; the same salt gives the same pseudonyms "
            "(default: a random salt kept in the run journal).",
        ),
    ] = None,
    heatmaps: Annotated[
        HeatmapMode,
        typer.Option(help="Draw heatmap thumbnails for positive vertebrae, all, or none."),
    ] = HeatmapMode.POSITIVE,
    heatmap_method: HeatmapMethodOption = DEFAULT_HEATMAP,
    precut: Annotated[
        bool,
        typer.Option(
            help="Without --boxes, cut the crops from the localizer's decode of each image "
            "(about 0.5 MB per image in RUN_DIR/precut until the scan ends) instead of decoding "
            "it a second time.",
        ),
    ] = True,
    include_all_radiographs: IncludeAllRadiographs = False,
    accept_blank_view: AcceptBlankView = False,
    accept_blank_body_part: AcceptBlankBodyPart = False,
    modality: Modalities = None,
    body_part_keyword: BodyPartKeywords = None,
    lateral_keyword: LateralKeywords = None,
    files: FilesList = None,
    # -- a PACS as the archive (auditor.pacs; docs/pacs.md) --
    study_date: Annotated[
        str | None,
        typer.Option(
            help="PACS: studies dated FROM-TO (YYYYMMDD-YYYYMMDD; either end may be open).",
            rich_help_panel=PACS_PANEL,
        ),
    ] = None,
    auth_file: AuthFileOption = None,
    ca_bundle: CaBundleOption = None,
    calling_aet: Annotated[
        str | None,
        typer.Option(
            help="PACS over DIMSE (dicom://): tlaudit's AE title, which the PACS must know "
            "[default: TLAUDIT].",
            rich_help_panel=PACS_PANEL,
        ),
    ] = None,
    cache_cap_mb: Annotated[
        float,
        typer.Option(
            min=1,
            help="PACS: most MB of retrieved images in RUN_DIR/cache at once; the retrieval "
            "waits for the room the images the scan has read free (with --boxes the cap must "
            "hold one batch); with --keep-cache it must hold every candidate.",
            rich_help_panel=PACS_PANEL,
        ),
    ] = 20_000,
    keep_cache: Annotated[
        bool,
        typer.Option(
            "--keep-cache",
            help="PACS: keep the retrieved images in RUN_DIR/cache after the scan; the cache "
            "is otherwise cleaned image by image (export-dicom and review then retrieve the "
            "images they need with --pacs).",
            rich_help_panel=PACS_PANEL,
        ),
    ] = False,
    dicom_out: DicomOutOption = None,
    uid_root: UidRootOption = None,
    stow: StowOption = None,
) -> None:
    """Classify every vertebra of the lateral TL-spine views in ARCHIVE and flag likely misses."""
    from auditor.scan.config import ScanConfig, ScanEvent

    # the schemes of auditor.pacs.connect.SCHEME_PREFIX and auditor.pacs.dimse.SCHEME, not
    # imported here: they pull in the network libraries
    pacs = archive.lower().startswith(("dicomweb+", "dicom://"))
    if not pacs and not Path(archive).is_dir():
        raise typer.BadParameter(f"{archive!r} is no folder", param_hint="'ARCHIVE'")
    config = ScanConfig(
        archive=out if pacs else Path(archive),  # a PACS scan audits RUN_DIR/cache
        out=out,
        boxes=boxes,
        box_format=box_format,
        localizer=localizer,
        reads=reads,
        reads_columns=reads_mapping(reads_column or (), reads_columns),
        reads_rules=tuple(reads_rules or ()),
        strict_reads=strict_reads,
        strict_domain=strict_domain,
        image_check=image_check,
        viewer_url=viewer_url,
        model=model,
        operating_point=point_name(operating_point),
        threshold=threshold,
        device=device,
        precision=precision,
        heatmap_method=heatmap_method,
        batch_size=batch_size,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        model_in_workers=model_in_workers,
        resume=resume,
        pseudonymise=pseudonymise,
        pseudonym_salt=pseudonym_salt,
        heatmaps=heatmaps,
        precut=precut,
        triage=build_rules(
            include_all_radiographs=include_all_radiographs,
            accept_blank_view=accept_blank_view,
            accept_blank_body_part=accept_blank_body_part,
            modality=modality,
            body_part_keyword=body_part_keyword,
            lateral_keyword=lateral_keyword,
            files=files,
        ),
    )
    console = Console()
    bar = Progress(
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("vertebrae"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("classify", total=None)

    def on_event(event: ScanEvent) -> None:
        if event.kind == "info":
            console.print(escape(event.message), highlight=False)
        elif event.kind == "start":
            bar.update(task, total=event.total)
            bar.start()
        elif event.kind == "batch":
            bar.advance(task, event.advance)

    try:
        from auditor.archive.inventory import NoCandidatesError
        from auditor.scan.pipeline import run_scan  # torch loads here, not at import

        results = None
        if uid_root is not None and dicom_out is None:
            raise UsageError(
                "--uid-root names the UIDs of the files --dicom-out writes; give it too"
            )
        if dicom_out is not None or stow:
            from auditor.pacs.scan import export_results, results_from_options

            results = results_from_options(
                dicom_out, stow, auth_file, ca_bundle, pseudonymise, uid_root
            )
        if pacs:
            from auditor.pacs.scan import route_from_options, scan_pacs

            if logging.getLogger().getEffectiveLevel() > logging.INFO:
                # pynetdicom logs each failed or refused association at ERROR; tlaudit's own
                # message says it once, with what to do (--verbose shows pynetdicom's)
                logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
            source = route_from_options(
                archive, study_date, auth_file, ca_bundle, cache_cap_mb, calling_aet
            )
            done = scan_pacs(config, source, on_event, keep_cache=keep_cache, results=results)
            result = done.scan
        else:
            result = run_scan(config, on_event)
            if results is not None:
                export_results(config, result, results, on_event)
    except NoCandidatesError as err:  # the counts by reason, each with the option that takes it
        console.print(triage_table(f"Nothing to audit in {archive}", err.summary))
        raise
    finally:
        bar.stop()

    table = Table(title="Studies", show_header=True)
    table.add_column("Status")
    table.add_column("Count", justify="right")
    for status, count in result.status_counts.items():
        table.add_row(status.value, str(count))
    console.print(table)
    console.print(
        f"{result.n_vertebrae} vertebrae on {result.n_images} images "
        f"({result.n_positive} positive), {result.n_flagged} studies in the flagged queue, "
        f"{result.n_errors} input errors; {result.timings['total_s']:.1f} s",
        highlight=False,
    )
    for kind, path in result.reports.items():
        console.print(f"  {kind}: {escape(str(path))}", highlight=False)
    if result.domain is not None and (banner := result.domain.banner()):
        console.print(f"[bold red]{escape(banner)}[/]", highlight=False)
    elif result.domain is not None and result.domain.crops_out:
        console.print(
            f"{result.domain.crops_out} of {result.domain.crops} vertebrae out of distribution "
            f"(marked in the reports){domain_counts(result.domain)}",
            highlight=False,
        )
    if config.boxes is not None and result.domain is not None and result.domain.images:
        refused = result.domain.images_out
        console.print(
            f"Image check: ran on {result.domain.images} images, {refused} unlike the "
            "localizer's training images"
            + (" (every crop of them marked out of distribution)" if refused else ""),
            highlight=False,
        )
    if result.reads is not None and (warning := result.reads.banner()):
        console.print(f"[bold red]{escape(warning)}[/]", highlight=False)
        if config.strict_reads:
            raise InputFileError(f"--strict-reads: {warning}")
    if config.strict_domain and result.domain is not None and result.domain.out_of_domain:
        raise TlauditError(f"--strict-domain: {result.domain.banner()}")


def domain_counts(domain: DomainCheck) -> str:
    """The end of the terminal line of an archive within the model's domain: the count rule's
    figures (when it ran) and the rules it passed."""
    c = domain.count
    if c is None:
        return "; the archive passes the share rule"
    return (
        f", on {c.studies_flagged} of {c.studies} studies (at most {c.expected:.1f} expected, "
        f"{c.p_text()}); the archive passes both rules"
    )


def reads_mapping(
    items: Sequence[str], mapping_file: Path | None
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``--reads-column`` items over a ``--reads-columns`` file, as the scan config holds them.

    Raises
    ------
    UsageError
        For an item that is not ROLE=COLUMN or names an unknown role.
    """
    from auditor.reads.columns import parse_mapping, read_mapping_file

    mapping = read_mapping_file(mapping_file) if mapping_file else {}
    mapping.update(parse_mapping(items))
    return tuple((role, tuple(columns)) for role, columns in mapping.items())
