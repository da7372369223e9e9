"""The domain guard's count rule (issue 21): the Poisson-binomial tail by hand, when the rule
fires beside the share rule, what the banner and the summary say, and the card's record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor.errors import BundleError
from auditor.model.bundle import CARD_FILE, attach_guard, create_untrained_bundle, load_bundle
from auditor.model.guard import (
    DEFAULT_ARCHIVE_SHARE,
    CountRule,
    GuardFeatures,
)
from auditor.model.stage_guard import PartSpec, fit_stage_guard
from auditor.records import DomainCheck


def test_the_tail_matches_a_hand_computed_poisson_binomial() -> None:
    """Studies of 1 and 2 crops (and one without) at a crop rate of 0.1: a study has a crop out
    with probability at most 0.1 and 1 - 0.9^2 = 0.19."""
    rule = CountRule(floor=0.0, crop_rate=0.1, alpha=0.05)
    both = rule.test([1, 2, 0], [1, 1, 0])
    assert (both.studies, both.studies_flagged) == (2, 2)
    assert both.expected == pytest.approx(0.29)
    assert both.tail == pytest.approx(0.1 * 0.19)  # P(K >= 2): both studies
    one = rule.test([1, 2, 0], [0, 2, 0])
    assert one.studies_flagged == 1
    assert one.tail == pytest.approx(1 - 0.9 * 0.81)  # P(K >= 1): not neither
    assert rule.test([1, 2], [0, 0]).tail == 1.0


def _check(crops: list[int], flagged: list[int], rule: CountRule | None = None) -> DomainCheck:
    """The domain check of an archive with these per-study counts, under the default rules."""
    return DomainCheck(
        guarded=True,
        threshold=1.0,
        archive_share=DEFAULT_ARCHIVE_SHARE,
        crops=sum(crops),
        crops_out=sum(flagged),
        method="test guard",
        count=(rule or CountRule()).test(crops, flagged),
    )


def test_a_small_archive_with_a_few_flags_stays_in_the_domain() -> None:
    check = _check([6, 6, 6], [2, 0, 0])  # 11 % of the crops, in one study of three
    assert check.crop_share > CountRule().floor and check.crop_share < DEFAULT_ARCHIVE_SHARE
    assert check.count is not None and check.count.tail > 0.1
    assert not (check.share_rule or check.count_rule or check.out_of_domain)
    assert check.banner() == ""
    assert ("Archive out of the model's domain", "no") in check.summary()


def test_a_large_archive_at_8_percent_is_out_by_the_count_rule() -> None:
    """200 studies of 6 crops, 48 of them with 2 crops out: 8 % of the crops, under the share
    rule's 20 %, in far more studies than an archive like the training data gives."""
    check = _check([6] * 200, [2] * 48 + [0] * 152)
    assert check.crop_share == pytest.approx(0.08)
    assert check.count is not None and check.count.tail < CountRule().alpha
    assert check.count_rule and not check.share_rule and check.out_of_domain
    banner = check.banner()
    assert banner.startswith("Out of distribution: 96 of 1200 vertebra crops (8%)")
    assert "count rule: more than 5% of the crops, and 48 of 200 studies" in banner
    assert "share rule" not in banner
    rows = dict(check.summary())
    assert rows["Archive out of the model's domain"].startswith("yes (count rule: ")
    assert rows["Studies with a vertebra out of distribution"].startswith("48 of 200;")


def test_a_tail_beyond_what_the_sum_resolves_reads_as_a_bound() -> None:
    check = _check([6] * 100, [6] * 100)
    assert check.count is not None and check.count.p_text() == "P < 1e-12"
    assert "P < 1e-12 < 0.001" in check.banner()


def test_the_same_share_in_few_studies_is_not_enough() -> None:
    """The count rule needs the count, not only the share: 8 % of 30 crops in 5 studies."""
    check = _check([6] * 5, [2, 1, 0, 0, 0])
    assert check.crop_share > CountRule().floor and not check.count_rule


def test_the_count_rule_needs_its_floor() -> None:
    """Many studies with one flag each but few of the crops out: under the floor, no banner."""
    rule = CountRule(floor=0.05, crop_rate=0.001, alpha=0.001)
    check = _check([20] * 100, [1] * 50 + [0] * 50, rule)  # 2.5 % of the crops, 50 studies
    assert check.count is not None and check.count.tail < rule.alpha
    assert not check.count_rule and not check.out_of_domain


def test_the_share_rule_still_fires_alone() -> None:
    check = _check([6, 6, 6], [5, 0, 0])  # 28 % of the crops, in one study
    assert check.share_rule and not check.count_rule and check.out_of_domain
    banner = check.banner()
    assert "(share rule: more than 20% of the crops)" in banner and "count rule" not in banner
    assert dict(check.summary())["Archive out of the model's domain"] == (
        "yes (share rule: more than 20% of the crops)"
    )


def test_the_share_rule_on_the_localizers_images_names_the_images() -> None:
    check = DomainCheck(True, 1.0, 0.2, crops=10, crops_out=0, images=4, images_out=2)
    assert check.share_rule and "share rule: more than 20% of the images" in check.banner()


def test_an_archive_without_a_guard_shows_no_rule() -> None:
    check = DomainCheck(False, None, 0.2, crops=0, crops_out=0)
    assert not check.out_of_domain and check.banner() == ""
    assert [k for k, _ in check.summary()] == ["Domain guard"]


def _guarded_bundle(tmp_path: Path, rule: CountRule | None = None) -> Path:
    folder = create_untrained_bundle(tmp_path / "b", input_size=32)
    rng = np.random.default_rng(4)
    fit = GuardFeatures(
        np.zeros((40, 512), np.float32), {"layer3": rng.random((40, 512), dtype=np.float32)}
    )
    guard = fit_stage_guard(
        fit,
        fit,
        rng.integers(0, 2, 40),
        (
            PartSpec(
                "layer3",
            ),
        ),
    )
    if rule is not None:
        guard = dataclasses.replace(guard, count_rule=rule)
    attach_guard(folder, guard)
    return folder


def test_the_count_rule_round_trips_through_the_card(tmp_path: Path) -> None:
    rule = CountRule(floor=0.1, crop_rate=0.03, alpha=0.0001)
    folder = _guarded_bundle(tmp_path, rule)
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["guard"]["count_rule"] == {"floor": 0.1, "crop_rate": 0.03, "alpha": 0.0001}
    guard = load_bundle(folder).card.guard
    assert guard is not None and guard.count_rule == rule


def test_a_card_from_before_the_count_rule_loads_with_the_defaults(tmp_path: Path) -> None:
    folder = _guarded_bundle(tmp_path, CountRule(floor=0.1))
    card = json.loads((folder / CARD_FILE).read_text())
    del card["guard"]["count_rule"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    guard = load_bundle(folder).card.guard
    assert guard is not None and guard.count_rule == CountRule()


def test_the_bundled_classifier_gets_the_default_count_rule() -> None:
    guard = load_bundle(Path(__file__).parents[2] / "models" / "tl-resnet18-synthetic").card.guard
    assert guard is not None and guard.count_rule == CountRule()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"floor": -0.1, "crop_rate": 0.02, "alpha": 0.001}, r"floor -0.1; expected .* \[0, 1\)"),
        ({"floor": 1.0, "crop_rate": 0.02, "alpha": 0.001}, "floor 1.0"),
        ({"floor": 0.05, "crop_rate": 0.0, "alpha": 0.001}, r"crop_rate 0.0; expected .* \(0, 1\)"),
        ({"floor": 0.05, "crop_rate": 0.02, "alpha": 1}, "alpha 1;"),
        ({"floor": 0.05, "crop_rate": 0.02, "alpha": True}, "alpha True"),
        ({"floor": 0.05, "crop_rate": 0.02, "alpha": "0.001"}, "alpha '0.001'"),
        ({"floor": 0.05, "crop_rate": float("nan"), "alpha": 0.001}, "crop_rate nan"),
        ({"floor": 0.05, "crop_rate": 0.02}, "must be an object with the keys"),
        ({"floor": 0.05, "crop_rate": 0.02, "alpha": 0.001, "code": 1}, "with the keys"),
        ([0.05, 0.02, 0.001], "must be an object"),
    ],
)
def test_a_malformed_count_rule_is_refused(tmp_path: Path, value: Any, match: str) -> None:
    folder = _guarded_bundle(tmp_path)
    card = json.loads((folder / CARD_FILE).read_text())
    card["guard"]["count_rule"] = value
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(BundleError, match=match):
        load_bundle(folder)


def test_the_images_of_one_study_count_as_one() -> None:
    """The scan counts studies, not images: two lateral views of one study (by their headers'
    Study Instance UID, or their boxes') are one unit of the count rule, an image refused by the
    image check counts all its crops out, and an image without either stands alone."""
    from auditor.records import RadiographMeta, VertebraBox
    from auditor.scan.journal import ImageOutcome, VertebraOutcome
    from auditor.scan.pipeline import crops_by_study
    from auditor.vocab import Level

    def outcome(image: str, distances: list[float | None]) -> ImageOutcome:
        found = tuple(
            VertebraOutcome(i, Level.L1, 0.2, distance=d) for i, d in enumerate(distances)
        )
        return ImageOutcome(image, "classified", "", (*found, VertebraOutcome(9, Level.L2, None)))

    outcomes = {
        "a/thoracic.dcm": outcome("a/thoracic.dcm", [0.5, 2.0, 0.5]),
        "a/lumbar.dcm": outcome("a/lumbar.dcm", [0.5, 0.5]),
        "b/lateral.dcm": outcome("b/lateral.dcm", [0.5, None]),
        "c/refused.png": outcome("c/refused.png", [0.5, 0.5]),
        "d/alone.png": outcome("d/alone.png", [3.0]),
    }
    metas = {
        "a/thoracic.dcm": RadiographMeta(Path("a/thoracic.dcm"), "dicom", study_uid="1.2.3"),
        "a/lumbar.dcm": RadiographMeta(Path("a/lumbar.dcm"), "dicom", study_uid="1.2.3"),
        "b/lateral.dcm": RadiographMeta(Path("b/lateral.dcm"), "dicom", study_uid="1.2.4"),
        "c/refused.png": None,
    }
    boxes = {
        "c/refused.png": (
            VertebraBox(1, "c/refused.png", "", Level.L1, 0, 0, 9, 9, study_uid="1.2.5"),
        )
    }
    counts = crops_by_study(outcomes, metas, boxes, frozenset({"c/refused.png"}), 1.0)
    assert counts == {
        "1.2.3": (5, 1),  # two images, one crop beyond the threshold
        "1.2.4": (1, 0),  # the crop without a distance has no verdict
        "1.2.5": (2, 2),  # refused: every crop out
        "image:d/alone.png": (1, 1),
    }
