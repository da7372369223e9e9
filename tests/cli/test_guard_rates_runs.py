"""``tlaudit guard-rates --runs``: how often the archive rules would mark archives drawn from
scanned studies (issue 21), on tiny run folders written here in the scan's format."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.errors import InputFileError, UsageError
from auditor.model.bundle import ModelBundle, load_bundle
from auditor.reports.findings import FINDINGS_COLUMNS
from auditor.resources import resource_path
from auditor.scan.archive_rates import read_run
from auditor.scan.image_check import IMAGE_CHECK, IMAGE_CHECK_COLUMNS
from auditor.scan.journal import RunJournal

runner = CliRunner()
BUNDLE = resource_path("models", "tl-resnet18-synthetic")

#: A study: per image, its crops' domain distances (None: a crop without a distance).
Study = Sequence[Sequence[float | None]]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return load_bundle(BUNDLE)


def _write_run(
    folder: Path,
    bundle: ModelBundle,
    studies: Sequence[Study],
    refused: Sequence[str] = (),
    model_sha256: str | None = None,
) -> Path:
    """A scan's run folder: findings.csv with a row per crop (the study's images named
    ``s<i>/<j>.dcm``), image_check.csv with a verdict on every image (``refused`` beyond the
    threshold), and the journal's fingerprint naming the bundle (or ``model_sha256``)."""
    folder.mkdir(parents=True)
    guard = bundle.card.guard
    assert guard is not None
    with (folder / "findings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FINDINGS_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for i, study in enumerate(studies):
            for j, distances in enumerate(study):
                image = f"s{i}/{j}.dcm"
                for k, d in enumerate(distances):
                    out = (d is not None and d > guard.threshold) or image in refused
                    writer.writerow(
                        {
                            **dict.fromkeys(FINDINGS_COLUMNS, ""),
                            "study": f"1.2.{i}",
                            "image": image,
                            "level": "L1",
                            "probability": "0.100000",
                            "call": "negative",
                            "box_row": str(k),
                            "domain_distance": "" if d is None else f"{d:.4f}",
                            "out_of_distribution": "yes" if out else "",
                        }
                    )
    with (folder / IMAGE_CHECK).open("w", newline="", encoding="utf-8") as handle:
        check = csv.writer(handle, lineterminator="\n")
        check.writerow(IMAGE_CHECK_COLUMNS)
        for i, study in enumerate(studies):
            for j in range(len(study)):
                image = f"s{i}/{j}.dcm"
                no = image in refused
                check.writerow([image, "9.0" if no else "0.1", "yes" if no else ""])
    fingerprint = {"model_sha256": model_sha256 or bundle.sha256, "guard_sha256": guard.sha256}
    with RunJournal(folder, fingerprint, resume=False):
        pass
    return folder


def _rates(tmp_path: Path, args: Sequence[str], name: str = "rates.json") -> dict[str, object]:
    out = tmp_path / name
    result = runner.invoke(app, ["guard-rates", str(BUNDLE), *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures: dict[str, object] = json.loads(out.read_text())
    return figures


def _study(distances: Sequence[float | None]) -> Study:
    return [distances]


@pytest.fixture(scope="module")
def distances(bundle: ModelBundle) -> tuple[float, float]:
    """A distance inside the guard's threshold and one beyond it."""
    assert bundle.card.guard is not None
    threshold = bundle.card.guard.threshold
    return threshold * 0.5, threshold * 2.0


def test_a_clean_pool_raises_no_banner_and_every_crop_out_always_does(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    inside, beyond = distances
    clean = _write_run(tmp_path / "clean", bundle, [_study([inside] * 6)] * 5)
    foreign = _write_run(tmp_path / "foreign", bundle, [_study([beyond] * 6)] * 5)
    figures = _rates(
        tmp_path, ["--runs", str(clean), "--foreign-runs", str(foreign), "--draws", "200"]
    )
    pools = figures["pools"]
    assert isinstance(pools, list)
    assert [p["name"] for p in pools] == ["in-domain", foreign.name]
    assert pools[0]["studies"] == 5 and pools[0]["crops"] == 30 and pools[0]["crops_out"] == 0
    assert pools[1]["out_rate"] == 1.0
    assert figures["sizes"] == [1, 3, 5, 10, 20, 40, 100, 200]
    for r in pools[0]["rates"]:
        assert (r["share_rule"], r["count_rule"], r["either"]) == (0.0, 0.0, 0.0)
    for r in pools[1]["rates"]:
        assert r["share_rule"] == r["either"] == 1.0
    # 1 or 3 studies of 6 crops, all out, are no improbable count for the count rule:
    # P = (1 - 0.98^6)^k = 0.11 and 0.0015, not under 0.001
    assert [r["count_rule"] for r in pools[1]["rates"]] == [0.0, 0.0] + [1.0] * 6


def test_the_count_rule_figure_by_hand(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    """Studies of 6 crops, half with one crop out (17 %: under the share rule's 20 %, over the
    floor's 5 %), half with none. A study has a crop out with probability at most
    q = 1 - 0.98^6 = 0.114 under the count rule, so an archive of 4 studies is marked only when
    all 4 have one (P(K >= 4) = q^4 = 1.7e-4 < 0.001; 3 of 4 give 0.0054): in (1/2)^4 of the
    draws. Archives of 1 and 3 studies never are (q^3 = 0.0015)."""
    inside, beyond = distances
    studies = [_study([beyond] + [inside] * 5), _study([inside] * 6)] * 3
    run = _write_run(tmp_path / "half", bundle, studies)
    figures = _rates(tmp_path, ["--runs", str(run), "--sizes", "1,3,4", "--seed", "5"])
    pools = figures["pools"]
    assert isinstance(pools, list)
    rates = {r["size"]: r for r in pools[0]["rates"]}
    assert rates[1]["count_rule"] == rates[3]["count_rule"] == 0.0
    assert rates[4]["count_rule"] == pytest.approx(1 / 16, abs=0.02)  # 4,000 draws: sd 0.004
    assert all(r["share_rule"] == 0.0 and r["either"] == r["count_rule"] for r in rates.values())


def test_the_draws_are_seeded(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    inside, beyond = distances
    studies = [_study([beyond, beyond] + [inside] * 4), _study([inside] * 6)] * 2
    run = _write_run(tmp_path / "run", bundle, studies)
    args = ["--runs", str(run), "--sizes", "1,2,3", "--draws", "300"]
    first = _rates(tmp_path, [*args, "--seed", "21"], "a.json")
    again = _rates(tmp_path, [*args, "--seed", "21"], "b.json")
    other = _rates(tmp_path, [*args, "--seed", "22"], "c.json")
    assert first == again
    assert first["pools"] != other["pools"]


def test_a_study_of_two_images_counts_once_and_a_refused_image_counts_out(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    inside, beyond = distances
    two_views: Study = [[inside, beyond, inside], [inside, inside, None]]
    run = _write_run(tmp_path / "run", bundle, [two_views, _study([inside] * 4)], ["s1/0.dcm"])
    guard = bundle.card.guard
    assert guard is not None
    # (crops, out, images checked, images refused): the crop without a distance has no verdict
    assert list(read_run(run, guard).values()) == [(5, 1, 2, 0), (4, 4, 1, 1)]
    figures = _rates(tmp_path, ["--runs", str(run), "--sizes", "1", "--draws", "50"])
    pools = figures["pools"]
    assert isinstance(pools, list)
    assert (pools[0]["studies"], pools[0]["crops"], pools[0]["crops_out"]) == (2, 9, 5)
    assert (pools[0]["images_checked"], pools[0]["images_refused"]) == (3, 1)


def test_a_run_scanned_with_another_model_is_refused(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    other = "ab" * 32
    run = _write_run(tmp_path / "run", bundle, [_study([distances[0]])], model_sha256=other)
    result = runner.invoke(app, ["guard-rates", str(BUNDLE), "--runs", str(run)])
    assert isinstance(result.exception, UsageError)
    message = str(result.exception)
    assert other in message and bundle.sha256 in message and str(run) in message


def _damage(run: Path, file: str, old: str, new: str) -> None:
    path = run / file
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize(
    ("damage", "file", "match"),
    [
        (lambda run: (run / "findings.csv").unlink(), "findings.csv", "is missing"),
        (
            lambda run: _damage(run, "findings.csv", "0.100000", "maybe"),
            "findings.csv",
            r"line 2: probability 'maybe' is not a number",
        ),
        (
            lambda run: _damage(run, "findings.csv", "domain_distance", "distance"),
            "findings.csv",
            "no column domain_distance",
        ),
        (
            lambda run: _damage(run, IMAGE_CHECK, ",\n", ",no\n"),
            IMAGE_CHECK,
            r"line 2: out_of_distribution 'no'",
        ),
        (
            lambda run: (run / "findings.csv").write_bytes(b"\xff\xfe\x00study"),
            "findings.csv",
            "not the findings.csv of a tlaudit scan",
        ),
    ],
)
def test_damaged_run_folders_are_refused_naming_the_file(
    tmp_path: Path,
    bundle: ModelBundle,
    distances: tuple[float, float],
    damage: Callable[[Path], object],
    file: str,
    match: str,
) -> None:
    run = _write_run(tmp_path / "run", bundle, [_study([distances[0]] * 2)])
    damage(run)
    result = runner.invoke(app, ["guard-rates", str(BUNDLE), "--runs", str(run)])
    assert isinstance(result.exception, InputFileError), result.output
    assert str(run / file) in str(result.exception)
    assert result.exception is not None
    with pytest.raises(InputFileError, match=match):
        raise result.exception


def test_missing_folders_empty_pools_and_mixed_modes_are_refused(
    tmp_path: Path, bundle: ModelBundle
) -> None:
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["guard-rates", str(BUNDLE), "--runs", str(missing)])
    assert isinstance(result.exception, InputFileError)
    assert f"{missing}: no such run folder" in str(result.exception)

    empty = _write_run(tmp_path / "empty", bundle, [_study([None, None])])
    result = runner.invoke(app, ["guard-rates", str(BUNDLE), "--runs", str(empty)])
    assert isinstance(result.exception, UsageError)
    assert "no study has a classified vertebra with a domain verdict" in str(result.exception)

    for args, match in (
        (["--runs", str(empty), "--heldout", str(tmp_path)], "takes no crop sets"),
        (["--foreign-runs", str(empty)], "--foreign-runs needs --runs"),
        ([], "give --heldout"),
        (["--runs", str(empty), "--sizes", "1,0"], "'0' is not a positive whole number"),
    ):
        result = runner.invoke(app, ["guard-rates", str(BUNDLE), *args])
        assert isinstance(result.exception, UsageError), args
        assert match in str(result.exception)


def test_the_table_names_the_pools_and_their_rates(
    tmp_path: Path, bundle: ModelBundle, distances: tuple[float, float]
) -> None:
    run = _write_run(tmp_path / "run", bundle, [_study([distances[0]] * 6)] * 2)
    result = runner.invoke(
        app, ["guard-rates", str(BUNDLE), "--runs", str(run), "--sizes", "1,3", "--draws", "10"]
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "2 studies, 12 crops, 0 out of distribution (0.0%)" in output
    assert "in-domain │ share │ 0 │ 0 │" in output
    assert "│ count │ 0 │ 0 │" in output and "│ either │ 0 │ 0 │" in output
