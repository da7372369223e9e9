"""``tlaudit guard``: fit a domain guard onto an existing bundle (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.checksums import file_sha256
from auditor.cli.app import app
from auditor.errors import UsageError
from auditor.model.bundle import CARD_FILE, WEIGHTS_FILE, create_untrained_bundle, load_bundle
from auditor.model.guard import GUARD_FILE
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
