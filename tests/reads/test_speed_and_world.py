"""``tlaudit bench --reads`` and the synthetic world's reports through the whole reads stage."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.reads.evaluate import score_against_truth
from auditor.reads.file import read_reads
from auditor.reads.speed import measure_parse_speed
from auditor.synth import SynthConfig, write_archive


def test_parse_speed_is_measured_with_and_without_memory() -> None:
    remembered, fresh = measure_parse_speed(40, seed=1)
    assert (remembered.reports, fresh.reports) == (40, 40)
    assert remembered.memory > 0 and fresh.memory == 0
    assert remembered.per_cpu_second > 0 and fresh.per_wall_second > 0


def test_bench_reads_prints_both_figures() -> None:
    result = CliRunner().invoke(app, ["bench", "--reads", "30", "--seed", "2"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "30 reports (sentence memory" in output
    assert "30 reports (no sentence memory)" in output
    assert output.count("per CPU second") == 2


def test_synthetic_world_reads_parse_as_their_truth(tmp_path: Path) -> None:
    world = tmp_path / "world"
    write_archive(world, 6, seed=41, config=SynthConfig(max_side=300, distractor_rate=0.0))
    with (world / "reads_truth.csv").open(newline="", encoding="utf-8") as handle:
        truth = list(csv.DictReader(handle))
    assert truth and {row["language"] for row in truth} <= {"en", "de", "fr", "it", "es"}
    reads = read_reads(world / "reads.csv")
    assert reads.errors == ()
    assert all(read.impression and not read.disagreement for read in reads.rows)
    score = score_against_truth(reads.rows, world / "reads_truth.csv")
    assert score.pairs >= len(reads.rows)
    assert score.accuracy >= 0.95, score.misses
    out, truth_file = tmp_path / "parsed.csv", str(world / "reads_truth.csv")
    command = ["parse-reads", str(world / "reads.csv"), "--out", str(out), "--truth", truth_file]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "F1 per mention kind" in result.output
