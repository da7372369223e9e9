"""``tlaudit guard-rates --renderer``: a world drawn with another renderer setting is reported as
a foreign set of its own, by the crop guard, the image check and the localizer's guard (issue 21).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.resources import resource_path
from auditor.synth import SynthConfig, write_archive
from auditor.vocab import RenderPreset

runner = CliRunner()


def _worlds(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny default world and the same draws rendered flat."""
    config = SynthConfig(max_side=500, distractor_rate=0)
    usual, flat = tmp_path / "usual", tmp_path / "flat"
    write_archive(usual, studies=2, seed=33, config=config)
    write_archive(flat, studies=2, seed=33, config=replace(config, render=RenderPreset.FLAT))
    return usual, flat


@pytest.mark.slow
def test_guard_rates_report_the_renderer_set(tmp_path: Path) -> None:
    usual, flat = _worlds(tmp_path)
    localizer = str(resource_path("models", "localizer-v2"))
    out = tmp_path / "rates.json"
    args = ["guard-rates", str(resource_path("models", "tl-resnet18-synthetic"))]
    args += ["--heldout", str(usual), "--renderer", str(flat), "--localizer", localizer]
    result = runner.invoke(app, [*args, "--no-cost", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps lines at the terminal's width
    rates = {r["set"]: r for r in json.loads(out.read_text())["rates"]}
    assert list(rates) == ["held-out usual", "inverted", "heavy noise", "renderer flat"]
    renderer = rates["renderer flat"]
    assert renderer["foreign"] and renderer["description"] == str(flat)
    assert renderer["n"] == rates["held-out usual"]["n"]  # the same boxes, other pixels
    assert renderer["image_flagged"] is not None  # the image check was asked
    assert f"renderer flat foreign {renderer['flagged']} of {renderer['n']} flagged" in output

    out_l = tmp_path / "localizer.json"
    args = ["guard-rates", "--task", "localizer", localizer, "--heldout", str(usual)]
    result = runner.invoke(app, [*args, "--renderer", str(flat), "--no-cost", "--out", str(out_l)])
    assert result.exit_code == 0, result.output
    images = {r["set"]: r for r in json.loads(out_l.read_text())["rates"]}
    assert images["renderer flat"]["foreign"]
    assert images["renderer flat"]["n"] == images["held-out usual"]["n"] == 2
