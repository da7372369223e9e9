"""``tlaudit bench``: model-only versus end-to-end scan throughput on this machine (thin)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from auditor.cli.model_options import HeatmapMethodOption, PrecisionOption
from auditor.vocab import DEFAULT_HEATMAP, Device, Precision

if TYPE_CHECKING:
    from auditor.pacs.bench import PacsBenchResult


def bench(
    archive: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Benchmark on this archive (needs --boxes)."
        ),
    ] = None,
    boxes: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Box file of --archive.")
    ] = None,
    studies: Annotated[
        int, typer.Option(min=1, help="Otherwise: studies in a synthetic archive.")
    ] = 16,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the synthetic archive.")] = 0,
    compressed: Annotated[
        bool,
        typer.Option(
            "--compressed", help="Synthetic archive with compressed images (default uncompressed)."
        ),
    ] = False,
    max_side: Annotated[
        int, typer.Option(min=192, help="Largest side of synthetic images, pixels.")
    ] = 3000,
    model: Annotated[
        Path | None, typer.Option(exists=True, help="Model bundle (default: the bundled one).")
    ] = None,
    untrained_input_size: Annotated[
        int | None,
        typer.Option(
            min=16,
            help="Benchmark an untrained ResNet18 of this input size instead of a bundle "
            "(same speed as trained weights).",
        ),
    ] = None,
    device: Annotated[
        Device,
        typer.Option(
            help="Where to run the networks: the fracture classifier and the vertebra localizer."
        ),
    ] = Device.AUTO,
    precision: PrecisionOption = Precision.AUTO,
    heatmap_method: HeatmapMethodOption = DEFAULT_HEATMAP,
    batch_size: Annotated[int, typer.Option(min=1, help="Vertebrae per batch.")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Crop-loading workers (default as in scan).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch threads of the scan's model (default as in scan)."),
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Model-only timing rounds.")] = 3,
    localizer: Annotated[
        bool,
        typer.Option(help="Also time the vertebra localizer on every candidate radiograph."),
    ] = True,
    localizer_model: Annotated[
        Path | None,
        typer.Option(exists=True, help="Localizer bundle (default: the bundled one)."),
    ] = None,
    localizer_scan: Annotated[
        bool,
        typer.Option(
            "--localizer-scan",
            help="Also scan the archive without its box file, with crops cut from the "
            "localizer's decode and with a second decode (twice each), and report the speed-up.",
        ),
    ] = False,
    image_check_scan: Annotated[
        bool,
        typer.Option(
            "--image-check-scan",
            help="Also scan the archive with its box file with and without the image check "
            "(alternated, three times each), and report the ratio of their times.",
        ),
    ] = False,
    model_in_workers: Annotated[
        bool,
        typer.Option(
            "--model-in-workers",
            help="The scan's worker processes run the model too (as scan --model-in-workers).",
        ),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Also scan with --engine ray and the local engine, alternated (twice each), "
            "and report Ray's overhead (needs: pip install 'tlaudit[ray]').",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="With --ray: the cluster to join (default: a local Ray instance)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", dir_okay=False, help="Also write the results here.")
    ] = None,
    review: Annotated[
        Path | None,
        typer.Option(
            "--review",
            exists=True,
            file_okay=False,
            help="Instead: time the review workbench on this scan's run folder, key press to "
            "next case drawn in headless Chromium (needs Playwright and Chromium).",
        ),
    ] = None,
    presses: Annotated[int, typer.Option(min=1, help="Key presses timed with --review.")] = 40,
    dwell_ms: Annotated[
        int,
        typer.Option(
            min=0, help="With --review: pause after each case drawn before the next press (ms)."
        ),
    ] = 0,
    pacs: Annotated[
        str | None,
        typer.Option(
            "--pacs",
            help="Instead: time QIDO-RS triage, WADO-RS retrieval and a scan through this "
            "DICOMweb PACS (dicomweb+http(s)://HOST[:PORT]/PATH) next to a scan of the same "
            "archive's files (--archive with --boxes, or a synthetic one with --upload). "
            "Credentials as for scan.",
        ),
    ] = None,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload", help="With --pacs: first send the archive's DICOM files with STOW-RS."
        ),
    ] = False,
    auth_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="With --pacs: credentials, as for scan."),
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="With --pacs: CA bundle, as for scan."),
    ] = None,
    connections: Annotated[
        int | None,
        typer.Option(min=1, help="With --pacs: requests in flight (default as in scan)."),
    ] = None,
    scan_rounds: Annotated[
        int,
        typer.Option(
            min=1, help="With --pacs: timed pairs of a PACS scan and a file scan (medians)."
        ),
    ] = 3,
    reads: Annotated[
        int | None,
        typer.Option(
            "--reads",
            min=1,
            help="Instead: time the report parser on this many synthetic reports (of world "
            "--seed) on one core, with and without its sentence memory.",
        ),
    ] = None,
) -> None:
    """Measure model-only and end-to-end scan throughput (vertebrae per second) and their ratio;
    with --review, the review workbench's key press to next case drawn instead; with --reads,
    the report parser's reports per second; with --pacs, a scan through DICOMweb next to a
    scan of the files."""
    console = Console()
    if pacs is not None:
        from auditor.pacs.bench import PacsBenchConfig, run_pacs_bench
        from auditor.pacs.scan import source_from_options

        source = source_from_options(pacs, auth_file=auth_file, ca_bundle=ca_bundle)
        if connections is not None:
            source = dataclasses.replace(source, connections=connections)
        pacs_result = run_pacs_bench(
            PacsBenchConfig(
                source=source,
                archive=archive,
                boxes=boxes,
                studies=studies,
                seed=seed,
                max_side=max_side,
                upload=upload,
                model=model,
                untrained_input_size=untrained_input_size,
                device=device.value,
                precision=precision.value,
                batch_size=batch_size,
                workers=workers,
                threads=threads,
                rounds=rounds,
                scan_rounds=scan_rounds,
            ),
            say=lambda message: console.print(escape(message), highlight=False),
        )
        _print_pacs(console, pacs_result, json_out)
        return
    if reads is not None:
        from auditor.reads.speed import measure_parse_speed

        for speed in measure_parse_speed(reads, seed):
            console.print(speed.line(), highlight=False)
        return
    if review is not None:
        _bench_review(console, review, presses, dwell_ms, json_out)
        return
    from auditor.bench import BenchConfig, run_bench  # torch loads here, not at import

    result = run_bench(
        BenchConfig(
            archive=archive,
            boxes=boxes,
            studies=studies,
            seed=seed,
            compressed=compressed,
            max_side=max_side,
            model=model,
            untrained_input_size=untrained_input_size,
            device=device.value,
            precision=precision.value,
            heatmap_method=heatmap_method.value,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            rounds=rounds,
            localizer=localizer,
            localizer_model=localizer_model,
            localizer_scan=localizer_scan,
            image_check_scan=image_check_scan,
            ray=ray,
            ray_address=ray_address,
            model_in_workers=model_in_workers,
        ),
        say=lambda message: console.print(escape(message), highlight=False),
    )
    t = result.scan_timings
    table = Table(title="tlaudit bench")
    table.add_column("Measure")
    table.add_column("Value", justify="right")
    rows = [
        ("Machine", result.machine),
        ("Device", result.device),
        ("Model", f"{result.model} ({result.input_size} px), batch {result.batch_size}"),
        ("Model-only, no heatmaps (vertebrae/s)", f"{result.model_only_no_cam_vps:.1f}"),
        (
            f"Model-only, {result.heatmap_method} for every crop (vertebrae/s)",
            f"{result.model_only_vps:.1f}",
        ),
        (
            "Model-only, no heatmaps, one model per core (vertebrae/s)",
            "not measured"
            if result.model_per_core_vps is None
            else f"{result.model_per_core_vps:.1f}",
        ),
        ("End-to-end scan (vertebrae/s)", f"{result.end_to_end_vps:.1f}"),
        ("End-to-end / model-only (the faster, no heatmaps)", f"{result.ratio:.0%}"),
        (
            "Heatmap overhead in the scan (positive vertebrae)",
            f"{result.scan_heatmap_overhead:+.1%}",
        ),
        ("Heatmap overhead, every crop", f"{result.cam_overhead:+.1%}"),
        (
            "Heatmap overhead, heatmap + overlay for every crop",
            f"{result.heatmap_overhead_all:+.1%}",
        ),
        (
            "Scan: images / vertebrae / heatmaps",
            f"{result.n_images} / {result.n_vertebrae} / {result.heatmaps_drawn}",
        ),
        ("Scan: loader workers / model threads", f"{result.workers} / {result.threads}"),
    ]
    if result.localizer_s_per_image is not None:
        rows.append(
            (
                f"Localizer, network + decoding (s per radiograph, median of "
                f"{result.localizer_images})",
                f"{result.localizer_s_per_image:.3f}",
            )
        )
    if result.localizer_read_s_per_image is not None:
        rows.append(
            (
                "Localizer, reading the file (s per radiograph)",
                f"{result.localizer_read_s_per_image:.3f}",
            )
        )
    if result.precut_speedup is not None:
        rows += [
            (
                "Scan without box file, one decode per image (vertebrae/s)",
                f"{result.localizer_scan_vps:.1f}",
            ),
            (
                "Scan without box file, two decodes per image (vertebrae/s)",
                f"{result.localizer_scan_decode_twice_vps:.1f}",
            ),
            ("One decode / two decodes", f"{result.precut_speedup:.2f}x"),
        ]
    if result.image_check_ratio is not None:
        rows += [
            (
                "Scan with the box file, image check on (s, best of 3)",
                f"{result.image_check_on_s:.2f}",
            ),
            (
                "Scan with the box file, image check off (s, best of 3)",
                f"{result.image_check_off_s:.2f}",
            ),
            ("Image check on / off", f"{result.image_check_ratio:.3f}"),
        ]
    if result.ray_overhead is not None:
        rows += [
            (
                f"Scan on Ray, {result.ray_cpus} CPUs (vertebrae/s, best of 2)",
                f"{result.ray_vps:.1f}",
            ),
            (
                "Scan on the local engine, alternated (vertebrae/s, best of 2)",
                f"{result.ray_local_vps:.1f}",
            ),
            ("Ray's overhead over the local engine", f"{result.ray_overhead:+.1%}"),
        ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)
    stages = Table(title=f"Where the scan's {t.get('total_s', 0.0):.2f} s went")
    for column in ("Stage", "Seconds", "Share of wall time"):
        stages.add_column(column, justify="left" if column == "Stage" else "right")
    for name, seconds, share in result.shares(result.stages):
        stages.add_row(escape(name), f"{seconds:.2f}", f"{share:.1%}")
    if result.worker_stages:
        stages.add_section()
        for name, seconds, share in result.shares(result.worker_stages):
            stages.add_row(escape(name), f"{seconds:.2f}", f"{share:.1%}")
        stages.caption = (
            f"Worker stages: the mean per image of {result.loader_images} images timed apart, "
            f"times {result.n_images} images; overlapped with the model."
        )
    console.print(stages)
    if json_out is not None:
        data = dataclasses.asdict(result)
        data.update(
            ratio=result.ratio,
            model_only_best_vps=result.model_only_best_vps,
            cam_overhead=result.cam_overhead,
            scan_heatmap_overhead=result.scan_heatmap_overhead,
            heatmap_overhead_all=result.heatmap_overhead_all,
            precut_speedup=result.precut_speedup,
            ray_overhead=result.ray_overhead,
            stages={name: seconds for name, seconds in result.stages},
            worker_stages={name: seconds for name, seconds in result.worker_stages},
        )
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _print_pacs(console: Console, result: PacsBenchResult, json_out: Path | None) -> None:
    table = Table(title="tlaudit bench --pacs")
    table.add_column("Measure")
    table.add_column("Value", justify="right")
    for name, value in result.rows():
        table.add_row(escape(name), escape(value))
    console.print(table)
    if result.mismatch:
        console.print(f"warning: {escape(result.mismatch)}", highlight=False)
    if json_out is not None:
        data = dataclasses.asdict(result)
        data.update(
            qido_ips=result.qido_ips,
            qido_cpu_share=result.qido_cpu_share,
            wado_ips=result.wado_ips,
            wado_mbps=result.wado_mbps,
            ratio=result.ratio,
            ratios=result.ratios,
            own_share=result.own_share,
        )
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _bench_review(
    console: Console, run_dir: Path, presses: int, dwell_ms: int, json_out: Path | None
) -> None:
    from auditor.review.latency import measure_latency

    result = measure_latency(run_dir, presses, dwell_ms)
    console.print(escape(result.summary()), highlight=False)
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
