"""``tlaudit evaluate``: metrics, localisation and the reports it writes (parsed, not compared)."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image
from typer.testing import CliRunner

from auditor.cli import app as cli_app
from auditor.model.bundle import create_untrained_bundle
from auditor.training.evaluate import EvaluateConfig, evaluate_bundle, peak_in_zone, zone_energy
from tests.helpers.train_world import LEVELS, make_world

runner = CliRunner()


class _Tables(HTMLParser):
    """Collect table ids, image sources and whether any external resource is referenced."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("id") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    archive, annotations = make_world(root / "world", n_studies=6, seed=2)
    bundle = create_untrained_bundle(root / "bundle", "resnet18", input_size=32, seed=1)
    return archive, annotations, bundle


def test_peak_in_zone_geometry() -> None:
    cam = np.zeros((32, 32), np.float32)
    cam[5, 6] = 1.0  # pixel centre (6.5, 5.5)
    square = np.array([[4.0, 4.0], [10.0, 4.0], [10.0, 10.0], [4.0, 10.0]])
    assert peak_in_zone(cam, square)
    assert not peak_in_zone(cam, square + 12.0)
    # a plateau of equal maxima counts at its centroid
    flat = np.zeros((32, 32), np.float32)
    flat[:8, :8] = 1.0  # centroid pixel (3.5, 3.5) -> centre (4, 4)
    assert peak_in_zone(flat, square)


def test_zone_energy_hand_computed() -> None:
    """Mass on the pixels whose centres lie in the zone, over all the mass; and the zone's share
    of the crop (a flat map's score)."""
    square = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])  # pixels (0-1, 0-1)
    inside = np.zeros((4, 4), np.float32)
    inside[:2, :2] = 1.0
    assert zone_energy(inside, square) == pytest.approx((1.0, 4 / 16))
    flat = np.ones((4, 4), np.float32)
    assert zone_energy(flat, square) == pytest.approx((0.25, 0.25))
    half = np.zeros((4, 4), np.float32)
    half[0, 0], half[3, 3] = 0.6, 0.2  # 0.6 of 0.8 inside
    assert zone_energy(half, square)[0] == pytest.approx(0.75)
    assert zone_energy(np.zeros((4, 4), np.float32), square) == (0.0, 0.25)


def test_evaluate_command_writes_plots_and_reports(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, annotations, bundle = world
    out = tmp_path / "report"
    result = runner.invoke(
        cli_app.app,
        [
            "evaluate",
            str(bundle),
            str(archive),
            "--annotations",
            str(annotations),
            "--out",
            str(out),
            "--bootstrap",
            "100",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "source study" in result.output and "88%" in result.output  # the study's accuracy
    for name in (
        "evaluation.json",
        "predictions.csv",
        "roc.png",
        "confusion.png",
        "reliability.png",
        "evaluation.xlsx",
        "evaluation.html",
    ):
        assert (out / name).is_file(), name
    for png in ("roc.png", "confusion.png", "reliability.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.size[0] > 100

    summary = json.loads((out / "evaluation.json").read_text())
    conf = summary["metrics"]["confusion"]
    assert sum(conf.values()) == 24 == summary["data"]["n_crops"]
    n_pos = summary["data"]["by_class"].get("fracture", 0)
    assert conf["tp"] + conf["fn"] == n_pos
    acc = summary["metrics"]["accuracy"]
    assert acc["value"] == pytest.approx((conf["tp"] + conf["tn"]) / 24)
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    # every proportion carries its counts, its method and its minimum-count mark
    metrics = summary["metrics"]
    assert metrics["ppv"]["total"] == conf["tp"] + conf["fp"]
    assert metrics["npv"]["total"] == conf["tn"] + conf["fn"]
    assert metrics["sensitivity"]["too_few"] == (n_pos < 10)
    assert metrics["auc"]["method"].startswith("DeLong")
    studies = summary["study_level"]
    assert studies["n_studies"] == 6 and studies["sensitivity"]["total"] == studies["n_fractured"]
    assert 0 <= studies["flags_per_1000_studies"]["value"] <= 1000
    ece = summary["reliability"]["ece"]
    assert 0 <= ece["value"] <= 1 and sum(b["n"] for b in summary["reliability"]["bins"]) == 24
    point = summary["operating_points"]["balanced"]
    assert point["intervals"]["sensitivity"]["count"] == conf["tp"]
    assert set(summary["operating_points"]) == {"balanced"}
    # levels run cranial to caudal (T11 before L1), not alphabetically
    by_level = list(summary["sensitivity_by_level"])
    assert any(k.startswith("T") for k in by_level) and any(k.startswith("L") for k in by_level)
    assert by_level == [level for level in LEVELS if level in by_level]
    # the factory's fractures are all AO A1, Genant grade 2
    by_grade = summary["sensitivity_by_genant_grade"]
    assert set(by_grade) == {"2"} and by_grade["2"]["total"] == n_pos
    assert by_grade["2"]["detected"] == conf["tp"]
    assert summary["annotations_sha256"] == hashlib.sha256(annotations.read_bytes()).hexdigest()

    wb = load_workbook(out / "evaluation.xlsx")
    assert {
        "Summary",
        "Operating points",
        "Studies and workload",
        "Reliability",
        "Sensitivity by group",
        "Vertebrae",
    } <= set(wb.sheetnames)
    op_rows = list(wb["Operating points"].iter_rows(min_row=2, values_only=True))
    assert {row[2] for row in op_rows} == {"accuracy", "sensitivity", "specificity", "PPV", "NPV"}
    workload = [row[2] for row in wb["Studies and workload"].iter_rows(min_row=2, values_only=True)]
    assert "flags per 1,000 studies" in workload
    groups = [row[:4] for row in wb["Sensitivity by group"].iter_rows(min_row=2, values_only=True)]
    assert ("Genant grade", "2", conf["tp"], n_pos) in groups
    vert = wb["Vertebrae"]
    assert vert.max_row == 25 and vert["A1"].value == "Image"

    parser = _Tables()
    parser.feed((out / "evaluation.html").read_text())
    assert {"headline", "points", "studies", "by-level", "by-ao", "by-grade"} <= set(parser.tables)
    assert parser.images and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert "Accuracy" in " ".join(parser.text)


def test_evaluate_localisation_and_hostile_names(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    archive, annotations, bundle = world
    text = annotations.read_text().replace(
        "studies/s000.png", "studies/<img src=x onerror=alert(1)>.png"
    )
    (archive / "studies" / "s000.png").rename(
        archive / "studies" / "<img src=x onerror=alert(1)>.png"
    )
    hostile = tmp_path / "hostile.csv"
    hostile.write_text(text)
    try:
        ev = evaluate_bundle(
            bundle,
            archive,
            hostile,
            EvaluateConfig(device="cpu", n_bootstrap=50, operating_point="balanced"),
        )
        from auditor.training.report import write_evaluation_reports

        paths = write_evaluation_reports(ev, tmp_path / "r")
    finally:
        (archive / "studies" / "<img src=x onerror=alert(1)>.png").rename(
            archive / "studies" / "s000.png"
        )
    html = paths["html"].read_text()
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror" in html
    if ev.localisation is not None:  # an untrained model may call nothing positive
        assert 0 <= ev.localisation.hits <= ev.localisation.total
        assert ev.localisation.total == sum(v is not None for v in ev.cam_peak_in_zone)
    assert len(ev.probs) == 24 and ev.probs.dtype == np.float32


@pytest.mark.parametrize("method", ["layercam", "layercam4", "cam"])
def test_localisation_scores_every_true_positive_with_the_chosen_heatmap(
    world: tuple[Path, Path, Path], tmp_path: Path, method: str
) -> None:
    """At threshold 0 every fracture is a true positive, so each one with a zone is scored, with
    the heatmap method asked for, and the score is recomputable from the saved flags."""
    import dataclasses
    import math

    from auditor.model.bundle import OperatingPoint, load_bundle, write_card

    archive, annotations, bundle = world
    loaded = load_bundle(bundle)
    everything = tmp_path / "everything"
    everything.mkdir()
    (everything / "weights.safetensors").write_bytes((bundle / "weights.safetensors").read_bytes())
    card = dataclasses.replace(
        loaded.card,
        operating_points={"balanced": OperatingPoint("balanced", 0.0, math.nan, math.nan)},
    )
    write_card(everything, card, loaded.sha256)

    ev = evaluate_bundle(
        everything,
        archive,
        annotations,
        EvaluateConfig(device="cpu", n_bootstrap=20, heatmap_method=method),
        ground_truth=annotations,
    )
    with_zone = [r.label == 1 and r.fracture_zone is not None for r in ev.data.records]
    assert ev.localisation is not None and ev.localisation.total == sum(with_zone) > 0
    scored = [v for v in ev.cam_peak_in_zone if v is not None]
    assert ev.localisation.hits == sum(scored)
    assert [v is not None for v in ev.cam_peak_in_zone] == with_zone
    assert ev.heatmap_method == method
    assert ev.as_dict()["localisation"]["heatmap_method"] == method
    assert 0.0 <= ev.localisation.energy <= 1.0 and 0.0 < ev.localisation.zone_share < 1.0
    assert ev.as_dict()["localisation"]["energy_in_zone"] == ev.localisation.energy
    assert method in ev.device


def test_three_of_three_fractures_print_the_exact_interval_and_the_mark(
    world: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Issue 21: a set with 3 fractures, all found, printed "100.0 % (100.0 %-100.0 %)"."""
    import csv
    import dataclasses
    import math

    from auditor.model.bundle import OperatingPoint, load_bundle, write_card

    archive, annotations, bundle = world
    loaded = load_bundle(bundle)
    everything = tmp_path / "everything"  # threshold 0: every vertebra is called a fracture
    everything.mkdir()
    (everything / "weights.safetensors").write_bytes((bundle / "weights.safetensors").read_bytes())
    card = dataclasses.replace(
        loaded.card,
        operating_points={"balanced": OperatingPoint("balanced", 0.0, math.nan, math.nan)},
    )
    write_card(everything, card, loaded.sha256)
    with annotations.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fractures = [r for r in rows if r["label"] == "fracture"][:3]
    three = tmp_path / "three.csv"
    with three.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(fractures + [r for r in rows if r["label"] != "fracture"])
    out = tmp_path / "report"
    args = ["evaluate", str(everything), str(archive), "--annotations", str(three)]
    result = runner.invoke(
        cli_app.app, [*args, "--out", str(out), "--bootstrap", "20", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "100.0% (100.0-100.0%)" not in text and "100.0% (100.0%-100.0%)" not in text
    assert "(29.2-100.0%)" in text and "3/3" in text  # the table may wrap a cell's text
    assert "too few to estimate" in text
    sens = json.loads((out / "evaluation.json").read_text())["metrics"]["sensitivity"]
    assert (sens["count"], sens["total"], sens["too_few"]) == (3, 3, True)
    assert sens["ci_low"] == pytest.approx(0.025 ** (1 / 3))
    html = (out / "evaluation.html").read_text()
    assert "100.0% (29.2-100.0%), 3/3, too few to estimate" in html
