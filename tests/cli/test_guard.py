"""``tlaudit guard``: fit a domain guard onto an existing bundle (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from auditor.checksums import file_sha256
from auditor.cli.app import app
from auditor.errors import UsageError
from auditor.model.bundle import CARD_FILE, WEIGHTS_FILE, create_untrained_bundle, load_bundle
from auditor.model.guard import GUARD_FILE
from auditor.resources import resource_path
from auditor.synth import SynthConfig, write_archive
from tests.helpers.train_world import make_world

runner = CliRunner()


@pytest.mark.slow
def test_guard_fits_stores_and_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    archive, annotations = make_world(tmp_path / "world", n_studies=12)
    bundle_dir = create_untrained_bundle(tmp_path / "bundle", input_size=32)
    weights_sha = file_sha256(bundle_dir / WEIGHTS_FILE)
    args = ["guard", str(bundle_dir), str(archive), "--boxes", str(annotations), "--device", "cpu"]

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "domain guard fitted on 24 crops" in " ".join(result.output.split())
    record = json.loads((bundle_dir / CARD_FILE).read_text())["guard"]
    assert record["file"] == GUARD_FILE
    assert record["sha256"] == file_sha256(bundle_dir / GUARD_FILE)
    # 12 studies of 6 patients, half the patients held out: 24 crops on each side
    assert record["fitted_on"]["n_fit"] + record["fitted_on"]["n_heldout"] == 48
    assert record["fitted_on"]["n_heldout"] > 0
    guard = load_bundle(bundle_dir).card.guard
    assert guard is not None and guard.threshold == record["threshold"]
    assert file_sha256(bundle_dir / WEIGHTS_FILE) == weights_sha  # weights untouched

    again = runner.invoke(app, args)
    # main() maps a UsageError to exit code 2; in-process the error itself comes back
    assert isinstance(again.exception, UsageError)
    assert "--force" in str(again.exception)  # the refusal names the escape hatch
    assert json.loads((bundle_dir / CARD_FILE).read_text())["guard"] == record

    forced = runner.invoke(app, [*args, "--force", "--quantile", "0.9"])
    assert forced.exit_code == 0, forced.output
    replaced = load_bundle(bundle_dir).card.guard
    assert replaced is not None
    assert replaced.quantiles["0.9"] == pytest.approx(replaced.threshold)
    assert "the 0.9 quantile" in replaced.fitted_on["threshold_rule"]
    assert file_sha256(bundle_dir / WEIGHTS_FILE) == weights_sha


def test_guard_rates_of_the_localizer_flag_noise_and_keep_held_out_images(tmp_path: Path) -> None:
    world = tmp_path / "world"
    write_archive(world, studies=4, seed=31, config=SynthConfig(max_side=700, distractor_rate=0))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    Image.fromarray(noise).save(corpus / "noise.png")
    (corpus / "notes.txt").write_text("not an image\n")
    out = tmp_path / "rates.json"
    bundle = resource_path("models", "localizer-v2")
    args = ["guard-rates", "--task", "localizer", str(bundle), "--heldout", str(world)]
    result = runner.invoke(app, [*args, "--corpus", str(corpus), "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps lines at the terminal's width
    assert "corpus corpus: 1 unreadable files skipped" in output
    assert "guard cost:" in output
    figures = json.loads(out.read_text())
    rates = {r["set"]: r for r in figures["rates"]}
    assert list(rates) == [
        "held-out world",
        "inverted",
        "noise, full resolution",
        "noise, at 192 px input",
        "corpus corpus",
    ]
    for name, r in rates.items():
        assert f"{name} " in output and f"{r['flagged']} of {r['n']} flagged" in output
    held = rates["held-out world"]
    assert held["n"] >= 4 and not held["foreign"]
    assert held["flagged"] <= held["n"] // 4  # mostly kept (the bundled guard: 0-0.4 %)
    assert rates["inverted"]["n"] == held["n"]
    assert rates["corpus corpus"] == {**rates["corpus corpus"], "n": 1, "flagged": 1}
    noisy = rates["noise, at 192 px input"]
    assert noisy["foreign"] and noisy["flagged"] == noisy["n"]
    assert figures["threshold"] > 0 and figures["cost"]["batch"] >= 1

    refused = runner.invoke(app, [*args, "--detections", str(out)])
    assert isinstance(refused.exception, UsageError)
    assert "takes no --spacing, no --detections and no --localizer" in str(refused.exception)


@pytest.mark.slow
def test_guard_rates_with_the_localizer_s_image_check_count_either_flag(tmp_path: Path) -> None:
    world = tmp_path / "world"
    write_archive(world, studies=4, seed=32, config=SynthConfig(max_side=700, distractor_rate=0))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    noise = np.random.default_rng(1).integers(0, 256, (300, 200), dtype=np.uint8)
    Image.fromarray(noise).save(corpus / "noise.png")
    out = tmp_path / "rates.json"
    args = ["guard-rates", str(resource_path("models", "tl-resnet18-synthetic"))]
    args += ["--heldout", str(world), "--corpus", str(corpus), "--device", "cpu"]
    args += ["--localizer", str(resource_path("models", "localizer-v2")), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "image check cost:" in output and "the image already decoded" in output
    figures = json.loads(out.read_text())
    rates = {r["set"]: r for r in figures["rates"]}
    for r in rates.values():
        assert r["either_flagged"] >= max(r["flagged"], r["image_flagged"])
        assert r["either_flagged"] <= r["flagged"] + r["image_flagged"]
    held = rates["held-out world"]
    assert held["image_flagged"] <= held["n"] // 4  # the synthetic views are kept
    # the noise image is refused as a whole: every one of its 16 forced boxes counts
    assert rates["corpus corpus"]["image_flagged"] == rates["corpus corpus"]["n"] == 16
    # the noisy crops' images are the held-out world's, as they are
    assert rates["heavy noise"]["image_flagged"] == held["image_flagged"]
    cost = figures["image_check_cost"]
    assert cost["s_per_image"] > 0 and cost["crops_per_image"] >= 1
    assert figures["localizer_guard_sha256"]
