"""``tlaudit bench``: it measures both throughputs on a small archive and reports their ratio."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from auditor.bench import BenchConfig, describe_machine, measure_model_per_core, run_bench
from auditor.cli.app import app
from auditor.errors import TlauditError, UsageError
from tests.helpers.scan_world import LEVELS, make_scan_world


@pytest.mark.parametrize("method", [None, "layercam"])
def test_bench_on_a_given_archive(tmp_path: Path, method: str | None) -> None:
    world = make_scan_world(tmp_path, n_studies=3)
    config = BenchConfig(
        archive=world.archive,
        boxes=world.boxes,
        untrained_input_size=32,
        device="cpu",
        batch_size=8,
        workers=0,
        threads=1,
        rounds=1,
        work_dir=tmp_path,
    )
    threads_before = torch.get_num_threads()
    if method is not None:
        config = dataclasses.replace(config, heatmap_method=method)
    result = run_bench(config)
    assert result.n_vertebrae == 3 * len(LEVELS)
    assert result.model_only_vps > 0 and result.model_only_no_cam_vps > 0
    assert result.end_to_end_vps > 0
    # the reference is the faster of the two model-only arrangements (one per core on 2+ cores)
    if (os.cpu_count() or 1) > 1:
        assert result.model_per_core_vps is not None and result.model_per_core_vps > 0
    best = max(result.model_only_no_cam_vps, result.model_per_core_vps or 0.0)
    assert result.model_only_best_vps == best
    assert result.ratio == pytest.approx(result.end_to_end_vps / best)
    t = result.scan_timings
    assert t["total_s"] >= t["model_s"] > 0
    assert result.heatmaps_drawn > 0 and t["heatmap_thumbnails_s"] > 0
    assert result.scan_heatmap_overhead > 0
    if method is None:
        # layercam4 (the default) comes from the classifying pass: no second pass to time, but
        # the thumbnails of positive vertebrae are still the heatmaps' price
        assert result.heatmap_method == "layercam4" and t["heatmap_maps_s"] == 0
    else:  # layercam's second pass is timed inside the scan's model time
        assert result.heatmap_method == "layercam"
        assert t["model_s"] > t["heatmap_maps_s"] > 0
    assert "cores" in result.machine
    # the localizer was timed on each of the three candidate radiographs
    assert result.localizer_images == 3
    assert result.localizer_s_per_image is not None and result.localizer_s_per_image > 0
    assert result.localizer_read_s_per_image is not None and result.localizer_read_s_per_image > 0
    assert not any(p.name.startswith("tlaudit-bench-") for p in tmp_path.iterdir())  # cleaned up
    # the scan's model ran on the threads asked for, and the caller's count is back
    assert result.threads == 1 and torch.get_num_threads() == threads_before
    # the stage breakdown is the scan's own timers, adding up to its wall time
    stages = dict(result.stages)
    assert sum(stages.values()) == pytest.approx(t["total_s"])
    assert stages["model"] == pytest.approx(t["model_s"] - t["heatmap_maps_s"])
    assert stages["journal"] == t["journal_s"] and stages["reports"] == t["reports_s"]
    # decoding and cropping were timed apart on every image (fewer than loader_sample)
    assert result.loader_images == 3
    assert result.decode_s_per_image is not None and result.decode_s_per_image > 0
    workers = dict(result.worker_stages)
    assert workers["decode (in the workers)"] == pytest.approx(3 * result.decode_s_per_image)


def test_scan_heatmap_overhead_counts_the_pass_and_the_thumbnails() -> None:
    """The heatmaps' price in a scan is their autograd pass plus their overlay thumbnails, over
    the rest of the model time; a method without a second pass still pays for its thumbnails."""
    from auditor.bench import BenchResult

    def result(timings: dict[str, float]) -> BenchResult:
        return BenchResult(
            machine="m", device="cpu", model="x", input_size=32, batch_size=8, workers=0,
            model_only_vps=1.0, model_only_no_cam_vps=1.0, overlay_s=0.0, end_to_end_vps=1.0,
            n_images=1, n_vertebrae=1, heatmaps_drawn=1, scan_timings=timings,
            heatmap_method="layercam",
        )  # fmt: skip

    layercam = result({"model_s": 10.0, "heatmap_maps_s": 2.0, "heatmap_thumbnails_s": 0.4})
    assert layercam.scan_heatmap_overhead == pytest.approx(2.4 / 8.0)
    forward = result({"model_s": 8.0, "heatmap_maps_s": 0.0, "heatmap_thumbnails_s": 0.4})
    assert forward.scan_heatmap_overhead == pytest.approx(0.05)
    assert result({}).scan_heatmap_overhead == 0.0


def test_stage_shares_are_of_the_scans_wall_time() -> None:
    from auditor.bench import BenchResult

    timings = {
        "total_s": 20.0, "inventory_s": 1.0, "loader_wait_s": 2.0, "model_s": 10.0,
        "heatmap_maps_s": 1.0, "heatmap_thumbnails_s": 0.5, "journal_s": 0.5, "reports_s": 1.0,
    }  # fmt: skip
    result = BenchResult(
        machine="m", device="cpu", model="x", input_size=32, batch_size=8, workers=2,
        model_only_vps=1.0, model_only_no_cam_vps=1.0, overlay_s=0.0, end_to_end_vps=1.0,
        n_images=10, n_vertebrae=60, heatmaps_drawn=1, scan_timings=timings,
        heatmap_method="layercam", decode_s_per_image=0.5, crop_s_per_image=0.1,
    )  # fmt: skip
    shares = {name: share for name, _, share in result.shares(result.stages)}
    assert shares["model"] == pytest.approx(0.45) and shares["heatmap pass"] == pytest.approx(0.05)
    assert shares["other"] == pytest.approx(5.0 / 20.0)  # 20 s less the 15 s timed
    assert sum(shares.values()) == pytest.approx(1.0)
    worker = {name: share for name, _, share in result.shares(result.worker_stages)}
    assert worker == pytest.approx({"decode (in the workers)": 0.25, "crop (in the workers)": 0.05})
    # with the model in the workers, the wait for them holds the model's time: the labels say so
    in_workers = dict(dataclasses.replace(result, model_in_workers=True).stages)
    assert in_workers["wait for the workers (decode, crop and model)"] == 2.0
    assert in_workers["model, in this process"] == pytest.approx(9.0)
    # a scan with the image check: its network (and loading its localizer) is a stage of its
    # own, its canvases are the workers' (in the loader wait), and the alternated scans' ratio
    # is the one with the check over the one without
    checked = dataclasses.replace(result, scan_timings={**timings, "image_check_s": 2.0})
    assert dict(checked.stages)["image check (localizer loading, guard network)"] == 2.0
    assert dict(checked.stages)["loader wait (decode, crop, canvas, transfer not hidden)"] == 2.0
    assert dict(checked.stages)["other"] == pytest.approx(3.0)
    assert result.image_check_ratio is None
    ratio = dataclasses.replace(result, image_check_on_s=2.5, image_check_off_s=2.0)
    assert ratio.image_check_ratio == pytest.approx(1.25)


def test_bench_archive_needs_boxes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--boxes"):
        run_bench(BenchConfig(archive=tmp_path))


@pytest.mark.slow
def test_bench_cli_on_a_synthetic_archive(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--studies",
            "1",
            "--max-side",
            "256",
            "--untrained-input-size",
            "32",
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--rounds",
            "1",
            "--localizer-scan",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "End-to-end / model-only" in result.output
    assert "One decode / two decodes" in result.output
    assert "Where the scan's" in result.output and "decode (in the workers)" in result.output
    data = json.loads(out.read_text())
    assert data["n_vertebrae"] > 0
    assert data["stages"]["model"] > 0 and data["worker_stages"]["decode (in the workers)"] > 0
    best = max(data["model_only_no_cam_vps"], data["model_per_core_vps"] or 0.0)
    assert data["model_only_best_vps"] == best
    assert data["ratio"] == pytest.approx(data["end_to_end_vps"] / best)
    assert data["scan_heatmap_overhead"] >= 0
    assert describe_machine() == data["machine"]
    assert "Localizer, network + decoding" in result.output
    assert data["localizer_images"] == 1 and data["localizer_s_per_image"] > 0
    # the localizer-path scans ran both ways and found vertebrae on the synthetic study
    assert data["localizer_scan_vps"] > 0 and data["localizer_scan_decode_twice_vps"] > 0
    assert data["precut_speedup"] == pytest.approx(
        data["localizer_scan_vps"] / data["localizer_scan_decode_twice_vps"]
    )


def test_bench_synthetic_archive_is_uncompressed_unless_asked(tmp_path: Path) -> None:
    """Without --compressed every file is stored uncompressed, distractors included, so the bench
    runs where no JPEG encoder is installed (the lent GPU machine has none)."""
    import csv

    from auditor.bench import _synthetic_archive

    archive, _ = _synthetic_archive(BenchConfig(studies=24, max_side=300), tmp_path)
    with (archive.parent / "manifest.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["transfer_syntax"]]
    assert len(rows) >= 24
    assert {r["transfer_syntax"] for r in rows} <= {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}


@pytest.mark.slow
def test_bench_measures_rays_overhead_against_the_local_engine(tmp_path: Path) -> None:
    import ray

    world = make_scan_world(tmp_path, n_studies=3)
    config = BenchConfig(
        archive=world.archive,
        boxes=world.boxes,
        untrained_input_size=32,
        device="cpu",
        batch_size=4,
        workers=1,
        rounds=1,
        localizer=False,
        loader_sample=0,
        work_dir=tmp_path,
        ray=True,
    )
    try:
        result = run_bench(config)
    finally:
        ray.shutdown()
    assert result.ray_vps is not None and result.ray_vps > 0
    assert result.ray_local_vps is not None and result.ray_local_vps > 0
    assert result.ray_overhead == pytest.approx(result.ray_local_vps / result.ray_vps - 1.0)
    assert result.ray_cpus >= 1


def test_per_core_measure_reports_a_copy_that_died_at_once(tmp_path: Path) -> None:
    """A model copy that dies before reporting (here: a bundle that cannot be loaded) is an
    error naming its exit code, raised as soon as the copy is gone, not after the deadline."""
    with pytest.raises(TlauditError, match="died \\(exit code 1"):
        measure_model_per_core(tmp_path / "no-such-bundle", "fp32", "layercam4", 2, 1, 2)
