"""The console script: version, help, its choices, a light import, and the error exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from enum import Enum

import pytest
import typer
from typer.testing import CliRunner

from auditor import __version__
from auditor.cli import app as cli_app
from auditor.cli import train as train_cli
from auditor.errors import TlauditError, UsageError
from auditor.resources import resource_path
from auditor.vocab import Device, HeatmapMethod, OperatingPointName, Precision

runner = CliRunner()
#: Modules ``import auditor.cli.app`` must not load: each costs ``tlaudit --help`` time.
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "pydicom.pixels",
    "openpyxl",
    "jinja2",
    "starlette",
    "uvicorn",
)


def test_version() -> None:
    result = runner.invoke(cli_app.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tlaudit {__version__}"


def test_help_lists_commands() -> None:
    names = sorted(typer.main.get_command(cli_app.app).commands)  # type: ignore[attr-defined]
    assert "scan" in names and "evaluate-localizer" in names
    result = runner.invoke(cli_app.app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    listed = {line.strip("│ ").split(" ")[0] for line in result.output.splitlines()}
    assert [name for name in names if name not in listed] == []


def test_import_loads_no_heavy_modules() -> None:
    # A fresh interpreter: this one has loaded torch and friends for other tests.
    code = (
        "import json, sys, auditor.cli.app; "
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def _choices(command: str, option: str) -> list[str]:
    """The choices ``tlaudit COMMAND --help`` shows for OPTION, as ``<a|b|c>``."""
    result = runner.invoke(cli_app.app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if f" {option} " in line)
    return line.split("<", 1)[1].split(">", 1)[0].split("|")


@pytest.mark.parametrize(
    ("command", "option", "choices"),
    [
        ("scan", "--operating-point", OperatingPointName),
        ("scan", "--device", Device),
        ("scan", "--precision", Precision),
        ("scan", "--heatmap-method", HeatmapMethod),
        ("evaluate", "--operating-point", OperatingPointName),
        ("evaluate", "--device", Device),
        ("bench", "--heatmap-method", HeatmapMethod),
        ("calibrate", "--device", Device),
        ("train", "--device", Device),
        ("train", "--crop-normalisation", train_cli.CropNormalisationChoice),
        ("train", "--class-weighting", train_cli.ClassWeightingChoice),
    ],
)
def test_help_lists_choices(command: str, option: str, choices: type[Enum]) -> None:
    assert _choices(command, option) == [member.value for member in choices]


def test_scan_help_says_where_the_localizer_runs() -> None:
    result = runner.invoke(cli_app.app, ["scan", "--help"], env={"COLUMNS": "200"})
    assert "the fracture classifier and, without --boxes, the vertebra localizer" in result.output


def test_operating_point_names_are_the_ones_cards_hold() -> None:
    from auditor.training.metrics import choose_operating_points

    chosen = choose_operating_points([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9])
    card = json.loads(
        (resource_path("models", "tl-resnet18-synthetic") / "card.json").read_text("utf-8")
    )
    names = [member.value for member in OperatingPointName]
    assert list(chosen) == names
    assert list(card["operating_points"]) == names
    assert card["default_operating_point"] in names


def test_cli_choices_agree_with_the_library() -> None:
    # The command line cannot import these (torch, pydicom); its copies must not drift.
    from auditor.crops import CROP_NORMALISATIONS
    from auditor.model.cam import RESNET_HEATMAPS
    from auditor.model.infer import DEVICES, PRECISIONS
    from auditor.model.network import ARCHITECTURES
    from auditor.training.config import CLASS_BALANCING, MONITORS

    for enum, library in (
        (Device, DEVICES),
        (Precision, PRECISIONS),
        (HeatmapMethod, RESNET_HEATMAPS),
        (train_cli.ArchitectureChoice, ARCHITECTURES),
        (train_cli.MonitorChoice, MONITORS),
        (train_cli.CropNormalisationChoice, CROP_NORMALISATIONS),
        (train_cli.ClassWeightingChoice, CLASS_BALANCING),
    ):
        assert tuple(member.value for member in enum) == tuple(library), enum


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert __version__ in done.stdout


@pytest.mark.parametrize(("error", "code"), [(TlauditError("bad [x]"), 1), (UsageError("no"), 2)])
def test_errors_map_to_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    def boom() -> None:
        raise error

    monkeypatch.setattr(cli_app, "app", boom)
    with pytest.raises(SystemExit) as exit_info:
        cli_app.main()
    assert exit_info.value.code == code
    assert str(error) in capsys.readouterr().err
