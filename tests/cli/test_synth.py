"""``tlaudit synth`` on the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from auditor.cli.app import app


def test_synth_command_writes_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    result = CliRunner().invoke(
        app,
        [
            "synth",
            str(out),
            "--studies",
            "2",
            "--seed",
            "4",
            "--max-side",
            "256",
            "--distractor-rate",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lateral TL studies" in result.output
    for name in (
        "boxes.csv",
        "boxes.json",
        "ground_truth.csv",
        "ground_truth.json",
        "reads.csv",
        "studies.csv",
    ):
        assert (out / name).is_file()
    assert len(list((out / "archive").rglob("*.dcm"))) == 2


def test_synth_rejects_bad_rate(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "w"), "--miss-rate", "1.5"])
    assert result.exit_code == 2, result.output  # a usage error, not a traceback
    assert "--miss-rate" in result.output
    assert isinstance(result.exception, SystemExit)  # Click's exit, no other exception
    assert not (tmp_path / "w").exists()
