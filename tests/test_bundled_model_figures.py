"""The bundled classifier's card is reproducible: regenerate its held-out world and evaluate.

The model card (``models/tl-resnet18-synthetic/MODEL_CARD.md``), ``heldout_evaluation.json`` and
``heldout_hard_evaluation.json`` report figures on synthetic worlds that are not committed (about
300 MB each); ``tlaudit synth`` regenerates each byte for byte from its seed and options. This test
does that and checks that ``tlaudit evaluate`` gives the recorded figures for the committed
weights.
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

# compares numbers between code paths: CI reruns it on AVX2 kernels and with bf16 for auto
pytestmark = pytest.mark.numerics


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "hard", "recorded_file"),
    [
        # tlaudit synth --studies 150 --seed 2 --distractor-rate 0 --max-side 1500
        (2, False, "heldout_evaluation.json"),
        # the same with --seed 36 --subtle-share 0.5 --wedge-variants 0.2: a hard world, the kind
        # issue 5's targets are judged on
        (36, True, "heldout_hard_evaluation.json"),
    ],
)
def test_heldout_figures_in_the_card_are_reproduced(
    tmp_path: Path, seed: int, hard: bool, recorded_file: str
) -> None:
    bundle = Path(resource_path("models", "tl-resnet18-synthetic"))
    recorded = json.loads((bundle / recorded_file).read_text())
    world = tmp_path / "heldout"
    config = SynthConfig(max_side=1500, distractor_rate=0.0)
    if hard:
        config = replace(config, subtle_share=0.5, wedge_variant_share=0.2)
    write_archive(world, studies=150, seed=seed, config=config, workers=2)
    truth = world / "ground_truth.csv"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(bundle),
            str(world / "archive"),
            "--annotations",
            str(truth),
            "--ground-truth",
            str(truth),
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
            # the recorded figures are float32's (their "device" says so); --precision auto
            # would pick bf16 on CPUs with native bf16 (AVX-512 BF16, AMX)
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    now = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    # same world, same weights
    assert now["annotations_sha256"] == recorded["annotations_sha256"]
    assert now["bundle_sha256"] == recorded["bundle_sha256"]
    assert now["operating_point"] == recorded["operating_point"]
    assert "fp32" in recorded["device"] and "fp32" in now["device"]
    # Same figures. Another CPU's kernels sum in another order and move a float32 probability in
    # its last bits (about 1e-6); no probability of these worlds lies that close to the
    # threshold, so every count is equal. 1e-4 on the rates allows the AUC to move by about ten
    # swapped fracture/normal pairs (one swap moves it by 1 / (129 * 819) = 1e-5 on seed 2).
    assert now["metrics"]["confusion"] == recorded["metrics"]["confusion"]
    for key in ("accuracy", "sensitivity", "specificity", "auc"):
        assert now["metrics"][key]["value"] == pytest.approx(
            recorded["metrics"][key]["value"], abs=1e-4
        )
    assert now["sensitivity_by_ao_type"] == recorded["sensitivity_by_ao_type"]
    assert now["sensitivity_by_genant_grade"] == recorded["sensitivity_by_genant_grade"]
    # a heatmap's peak can sit on a zone's edge, where a last-bit change moves it across
    assert abs(now["localisation"]["hits"] - recorded["localisation"]["hits"]) <= 1
    assert now["localisation"]["total"] == recorded["localisation"]["total"]
    assert now["localisation"]["heatmap_method"] == recorded["localisation"]["heatmap_method"]
    # mean shares over about 130 maps: a last-bit change moves each by far less than 2e-3
    for key in ("energy_in_zone", "zone_area_share"):
        assert now["localisation"][key] == pytest.approx(recorded["localisation"][key], abs=2e-3)
