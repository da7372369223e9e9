"""A scan whose crops are unlike the model's training data says so everywhere: a red banner at
the top of the page, the workbook and the terminal, each call and study status marked, the
findings' columns, ``cases.json`` for the workbench, and ``--strict-domain`` exits 1 after writing
the reports."""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import markupsafe
import numpy as np
import openpyxl
import pytest

import auditor.cli.app as app_module
from auditor.model.bundle import create_untrained_bundle, load_bundle, save_bundle
from auditor.model.guard import fit_guard
from auditor.model.network import build_network, penultimate_width
from auditor.records import OUT_OF_DISTRIBUTION
from auditor.reports.cases import CASES_NAME, read_cases
from tests.helpers.scan_world import ScanWorld, make_scan_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ScanWorld:
    return make_scan_world(tmp_path_factory.mktemp("world"), n_studies=2)


@pytest.fixture(scope="module")
def foreign_guard_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained bundle whose guard was fitted on features far from any crop's: every crop of
    any archive lies out of distribution."""
    root = tmp_path_factory.mktemp("bundle")
    bundle = load_bundle(create_untrained_bundle(root / "untrained", input_size=32))
    rng = np.random.default_rng(0)
    width = penultimate_width(bundle.card.architecture)
    far = rng.normal(1000.0, 1.0, (300, width)).astype(np.float32)
    guard = fit_guard(far[:200], far[200:], source="features far from any crop (test)")
    net = build_network(bundle.card.architecture, feature_stride=bundle.card.feature_stride)
    net.load_state_dict(bundle.state_dict)
    return save_bundle(root / "guarded", dataclasses.replace(bundle.card, guard=guard), net)


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["tlaudit", *args])
    with pytest.raises(SystemExit) as info:
        app_module.main()
    return 0 if info.value.code is None else int(info.value.code)


def test_an_archive_out_of_the_models_domain_is_marked_everywhere(
    world: ScanWorld,
    foreign_guard_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    args = ["scan", str(world.archive), "--out", str(out), "--boxes", str(world.boxes)]
    args += ["--reads", str(world.reads), "--model", str(foreign_guard_bundle), "--device", "cpu"]
    assert _main(monkeypatch, *args, "--threshold", "0.0", "--strict-domain") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--strict-domain: Out of distribution:" in err
    # the rule that fired, by name (the image check refused both images too)
    assert "(share rule: more than 20% of the crops and of the images)" in err
    # the reports were written first, each with the banner at the top
    html = (out / "audit.html").read_text(encoding="utf-8")
    assert 'id="domain-banner"' in html and html.index("domain-banner") < html.index("queue")
    assert html.count("share rule: more than 20% of the crops and of the images") == 2  # + summary
    summary = openpyxl.load_workbook(out / "audit.xlsx")["Summary"]
    assert summary.cell(row=2, column=1).value == "WARNING"
    assert str(summary.cell(row=2, column=2).value).startswith("Out of distribution:")
    summary_rows = {r[0]: r[1] for r in summary.iter_rows(values_only=True) if r[0]}
    assert summary_rows["Archive out of the model's domain"] == (
        "yes (share rule: more than 20% of the crops and of the images)"
    )
    counted = str(summary_rows["Studies with a vertebra out of distribution"])
    assert counted.startswith("2 of 2;")
    assert "count rule: the archive is out" in counted
    queue = openpyxl.load_workbook(out / "audit.xlsx")["Flagged queue"]
    statuses = [row[1] for row in queue.iter_rows(min_row=2, values_only=True) if row[0]]
    assert statuses and all(f"vertebrae {OUT_OF_DISTRIBUTION}" in str(s) for s in statuses)
    with (out / "findings.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["probability"]]
    assert rows and all(r["out_of_distribution"] == "yes" for r in rows)
    assert all(float(r["domain_distance"]) > 0 for r in rows)
    assert f"positive; {OUT_OF_DISTRIBUTION}" in html
    # cases.json carries the banner and the marks for the review workbench
    cases = read_cases(out / CASES_NAME)
    assert cases.domain_banner.startswith("Out of distribution:")
    assert str(markupsafe.escape(cases.domain_banner)) in html
    vertebrae = [v for c in cases.studies for i in c.images for v in i.vertebrae]
    classified = [v for v in vertebrae if v.probability is not None]
    assert classified and all(v.out_of_distribution for v in classified)
    assert all(v.distance is not None and v.distance > 0 for v in classified)


def test_without_strict_domain_the_scan_warns_and_exits_0(
    world: ScanWorld,
    foreign_guard_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["scan", str(world.archive), "--out", str(tmp_path / "run"), "--device", "cpu"]
    args += ["--boxes", str(world.boxes), "--model", str(foreign_guard_bundle)]
    assert _main(monkeypatch, *args) == 0
    assert "Out of distribution:" in " ".join(capsys.readouterr().out.split())


def test_strict_domain_refuses_a_model_without_a_guard(
    world: ScanWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = create_untrained_bundle(tmp_path / "plain", input_size=32)
    args = ["scan", str(world.archive), "--out", str(tmp_path / "run"), "--device", "cpu"]
    args += ["--boxes", str(world.boxes), "--model", str(plain), "--strict-domain"]
    assert _main(monkeypatch, *args) == 2
