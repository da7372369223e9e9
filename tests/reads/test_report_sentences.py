"""The report parser on a hand-written table of report sentences (tests/data/report_sentences.csv:
written the way radiologists phrase reports, in five languages, with the expected mention of
every level), and on the synthetic world's reports with their truth.

The table was written in four rounds (its ``set`` column), each after the parser was fixed for
the misses of the rounds before, and each measured once before the fixes it prompted (the figures
are in CHANGELOG.md). Round 4 was written blind, without reading the parser, its rules or the
earlier rounds, and committed before it was scored. A development set (``dev5``) followed,
written by class of phrasing (inflections, pre- and post-posed doubt, dating words, study-wide
negations, level spellings) by someone who had read the parser, and scored before the fixes it
prompted. Round 5 was written blind again (by someone who never saw the parser, its rules or the
table, before the dev5 fixes were made), kept out of the repository until those fixes were done,
then committed and scored once (0.9214 per-level accuracy, 211 of 229 pairs; CHANGELOG.md); its
misses were then closed by class of phrasing, so it too now guards against regressions. Round 6,
blind like round 5 and written while round 5's misses were being closed (never shown to that
fixer), was scored once after those fixes: 0.9639 (240 of 249 pairs). Its nine misses are left
as they are, so the table's score is no longer 100 %: round 6 is the held-out estimate of how the
parser reads reports it has not seen, until the next blind round."""

from __future__ import annotations

import csv
from collections import Counter

import pytest

from auditor.reads.evaluate import score_reports
from auditor.synth.reports import LANGUAGES, report_world
from tests.helpers.paths import REPO_DIR

TABLE = REPO_DIR / "tests" / "data" / "report_sentences.csv"


def _table() -> list[tuple[str, str, dict[str, str]]]:
    with TABLE.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        (row["id"], row["text"], dict(p.split("=") for p in row["expected"].split(";") if p))
        for row in rows
    ]


def test_the_table_covers_five_languages_and_every_kind() -> None:
    cases = _table()
    assert len(cases) >= 100
    assert set(Counter(key.split("-")[-1][:2] for key, _, _ in cases)) == set(LANGUAGES)
    kinds = Counter(kind for _, _, truth in cases for kind in truth.values())
    assert all(kinds[kind] >= 10 for kind in ("affirmed", "old", "uncertain", "negated"))


def test_hand_written_sentences_are_read_per_level() -> None:
    score = score_reports(_table())
    misses = "\n".join(f"{m.key} {m.level}: {m.expected} -> {m.found}" for m in score.misses)
    assert score.accuracy >= 0.95, misses
    assert score.kind_f1["negated"] >= 0.95, misses


def test_synthetic_reports_are_read_as_their_truth_says() -> None:
    cases = [(c.key, c.report.text, dict(c.report.truth)) for c in report_world(20260, 300)]
    assert {c.report.language for c in report_world(20260, 300)} == set(LANGUAGES)
    score = score_reports(cases)
    assert score.affirmed_macro_f1 >= 0.98
    assert min(score.kind_f1.values()) >= 0.95, score.kind_f1


def test_synthetic_reports_are_deterministic_and_consistent_with_the_read() -> None:
    first = list(report_world(3, 50))
    assert first == list(report_world(3, 50))
    for case in first:
        reported = {level for level, kind in case.report.truth if kind != "negated"}
        assert reported == set(case.reported)
        assert all(case.report.truth_of(level) == "uncertain" for level in case.overcalled)


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_names_levels_its_own_way(language: str) -> None:
    texts = " ".join(c.report.text for c in report_world(5, 400) if c.report.language == language)
    expected = {"de": "LWK", "fr": "D1", "it": "D1", "es": "D1", "en": "lumbar vertebra"}
    assert expected[language] in texts
