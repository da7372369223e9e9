"""``review-stats``: exact intervals, kappa, and no figure the data cannot support."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.errors import UsageError
from auditor.records import StudyStatus
from auditor.review.run import load_run
from auditor.review.stats import (
    NOT_ENOUGH_OVERLAP,
    NOTHING_REVIEWED,
    compute_stats,
    kappa,
    proportion,
)
from auditor.review.store import ReviewStore, box_id


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Clopper-Pearson by hand: k = 0 gives [0, 1 - 0.025^(1/n)], k = n gives
        # [0.025^(1/n), 1]; 1 of 2 solves 1 - (1 - p)^2 = 0.025 and 1 - p^2 = 0.025
        (0, 4, 0.0, 1 - 0.025 ** (1 / 4)),
        (3, 3, 0.025 ** (1 / 3), 1.0),
        (1, 2, 1 - math.sqrt(0.975), math.sqrt(0.975)),
    ],
)
def test_exact_interval_by_hand(k: int, n: int, low: float, high: float) -> None:
    found = proportion(k, n)
    assert found.value == pytest.approx(k / n)
    assert found.low == pytest.approx(low, abs=1e-9)
    assert found.high == pytest.approx(high, abs=1e-9)
    assert "exact" in str(found) and f"{k}/{n}" in str(found)


def test_nothing_reviewed_has_no_figure() -> None:
    found = proportion(0, 0)
    assert (found.value, found.low, found.high) == (None, None, None)
    assert str(found) == NOTHING_REVIEWED


def test_kappa_by_hand() -> None:
    # observed agreement 8/10; chance (0.4 * 0.4 + 0.6 * 0.6) = 0.52; (0.8 - 0.52) / 0.48 = 7/12
    first = ["fracture"] * 4 + ["no_fracture"] * 6
    second = ["fracture"] * 3 + ["no_fracture"] * 6 + ["fracture"]
    assert kappa(first, second) == pytest.approx(7 / 12)
    assert kappa(["fracture"], ["fracture"]) is None  # one item
    assert kappa(["unsure"] * 5, ["unsure"] * 5) is None  # one category
    assert kappa([], []) is None
    with pytest.raises(ValueError, match="3 labels against 2"):
        kappa(["a"] * 3, ["a"] * 2)


def test_figures_per_reviewer_overall_and_agreement(fresh_run: Path) -> None:
    run = load_run(fresh_run)
    flagged = [case for case in run.studies if case.queue_rank is not None]
    unflagged = [case.key for case in run.studies if case.queue_rank is None]
    assert len(flagged) == 2 and len(unflagged) == 4
    # the untrained model flags nothing likely missed; call both flagged studies so
    run = replace(
        run,
        studies=tuple(
            replace(case, status=StudyStatus.LIKELY_MISSED) if case.queue_rank else case
            for case in run.studies
        ),
    )
    boxes = [
        (case.key, image.ref, box_id(v.box_row))
        for case in run.studies
        for image in case.images
        for v in image.vertebrae
    ][:10]
    first = ["fracture"] * 4 + ["no_fracture"] * 6
    second = ["fracture"] * 3 + ["no_fracture"] * 6 + ["fracture"]
    with ReviewStore(fresh_run) as store:
        for (study, ref, box), a, b in zip(boxes, first, second, strict=True):
            store.record("alice", "decision", a, study=study, image=ref, box=box)
            store.record("bob", "decision", b, study=study, image=ref, box=box)
        store.record("bob", "deleted", True, study=study, image=ref, box=box)  # left out
        store.record("alice", "verdict", "confirmed miss", study=flagged[0].key)
        store.record("alice", "verdict", "unsure", study=flagged[1].key)
        store.record("bob", "verdict", "confirmed miss", study=flagged[0].key)
        sample = store.sample("alice", unflagged, 3, seed=1)
        store.record("alice", "verdict", "confirmed miss", study=sample[0])
        store.record("alice", "verdict", "not a fracture", study=sample[1])
        store.record("bob", "verdict", "not a fracture", study=sample[0])  # disagrees
        states = [store.state(name) for name in store.reviewers()]
    stats = compute_stats(run, states)

    alice, bob = stats.reviewers
    assert (alice.flagged, alice.flagged_reviewed, alice.confirmed_misses) == (2, 2, 1)
    assert (alice.ppv_likely_missed.k, alice.ppv_likely_missed.n) == (1, 2)  # unsure counts
    assert alice.ppv_likely_missed.low == pytest.approx(1 - math.sqrt(0.975))
    assert alice.sample_size == 3
    assert (alice.sample_miss_rate.k, alice.sample_miss_rate.n) == (1, 2)
    assert (bob.flagged_reviewed, bob.ppv_likely_missed.k, bob.ppv_likely_missed.n) == (1, 1, 1)
    assert bob.sample_size == 0 and bob.sample_miss_rate.value is None

    overall = stats.overall
    assert overall is not None and overall.disagreements == 1
    assert (overall.ppv_likely_missed.k, overall.ppv_likely_missed.n) == (1, 2)
    assert overall.sample_size == 3
    assert (overall.sample_miss_rate.k, overall.sample_miss_rate.n) == (0, 1)

    per_vertebra, per_study = stats.agreement
    assert per_vertebra.reviewers == ("alice", "bob")
    assert per_vertebra.items == 9  # bob deleted the tenth box
    assert per_vertebra.kappa == pytest.approx(kappa(first[:9], second[:9]))
    # studies both gave a verdict: flagged[0] (both confirmed miss), sample[0] (they differ)
    assert per_study.items == 2 and per_study.kappa == pytest.approx(0.0)
    assert json.loads(json.dumps(stats.to_json()))["overall"]["disagreements"] == 1


def test_review_stats_command(fresh_run: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["review-stats", str(fresh_run)])
    assert isinstance(result.exception, UsageError)
    run = load_run(fresh_run)
    study = run.studies[0]
    image = study.images[0]
    with ReviewStore(fresh_run) as store:
        store.record("alice", "verdict", "unsure", study=study.key)
        box = box_id(image.vertebrae[0].box_row)
        store.record("bob", "decision", "fracture", study=study.key, image=image.ref, box=box)
    out = fresh_run.parent / "stats.json"
    result = runner.invoke(
        app, ["review-stats", str(fresh_run), "--json", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "1 of 2" in result.output and "0 of 2" in result.output  # flags reviewed
    assert NOTHING_REVIEWED in result.output  # no likely-missed study was reviewed
    assert NOT_ENOUGH_OVERLAP in result.output
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert [r["reviewer"] for r in figures["reviewers"]] == ["alice", "bob"]
    assert figures["reviewers"][0]["ppv_likely_missed"]["value"] is None
    assert {a["note"] for a in figures["agreement"]} == {NOT_ENOUGH_OVERLAP}
