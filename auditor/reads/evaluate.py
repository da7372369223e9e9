"""How well the report parser reads reports whose truth is known: F1 per level and per mention
kind, accuracy per level, and every miss.

The unit is one (report, level) pair for every level of :data:`~auditor.vocab.SPINE_LEVELS` and
``*`` (study-wide): its true label is the mention kind the report gives it, or ``none``; the
parser's label is what :meth:`~auditor.reads.text.ReportParser.parse` gives it, or ``none``.

* **Affirmed vs not**, per level: the F1 of the ``affirmed`` class over all reports at that
  level; :attr:`ReadsScore.affirmed_macro_f1` averages it over the levels that hold an affirmed
  mention in the truth or in the parse.
* **Per mention kind**: the one-vs-rest F1 of each kind over all (report, level) pairs.
* **Per-level accuracy**: the share of (report, level) pairs whose label is right, over the
  pairs that either side mentions (pairs neither mentions would make any parser look good).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputFileError
from auditor.reads.text import ReportParser
from auditor.records import ReadRow
from auditor.vocab import SPINE_LEVELS, STUDY_WIDE, Mention

NONE = "none"
_UNITS = (STUDY_WIDE, *SPINE_LEVELS)


@dataclass(frozen=True)
class Miss:
    """A (report, level) pair the parser labelled wrong."""

    key: str
    level: str
    expected: str
    found: str


@dataclass(frozen=True)
class ReadsScore:
    """The parser's figures on a set of reports (see the module docstring)."""

    reports: int
    pairs: int  # (report, level) pairs that the truth or the parse mentions
    correct: int
    affirmed_f1_by_level: Mapping[str, float]
    kind_f1: Mapping[str, float]
    misses: tuple[Miss, ...]

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else 1.0

    @property
    def affirmed_macro_f1(self) -> float:
        values = list(self.affirmed_f1_by_level.values())
        return sum(values) / len(values) if values else 1.0

    def lines(self) -> list[str]:
        """The figures as a person reads them."""
        kinds = ", ".join(f"{kind} {f1:.4f}" for kind, f1 in self.kind_f1.items())
        return [
            f"reports: {self.reports}; (report, level) pairs mentioned: {self.pairs}",
            f"affirmed vs not, macro F1 over levels: {self.affirmed_macro_f1:.4f}",
            f"F1 per mention kind: {kinds}",
            f"per-level accuracy: {self.accuracy:.4f} ({self.correct}/{self.pairs}); "
            f"misses: {len(self.misses)}",
        ]


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def score_reports(
    cases: Iterable[tuple[str, str, Mapping[str, str]]], parser: ReportParser | None = None
) -> ReadsScore:
    """Parse each ``(key, text, truth)`` and score it against ``truth`` (level -> kind).

    Parameters
    ----------
    cases
        Reports with their keys and true mention per level (``*`` study-wide); a level not in
        ``truth`` is not mentioned.
    parser
        The parser (a new one with the shipped rules when None).
    """
    parser = parser or ReportParser()
    return score_labels(
        (key, truth, {m.level: m.mention.value for m in parser.parse(text)})
        for key, text, truth in cases
    )


def score_labels(cases: Iterable[tuple[str, Mapping[str, str], Mapping[str, str]]]) -> ReadsScore:
    """Score ``(key, truth, found)`` label maps (level -> mention kind) as the module says."""
    kinds = [m.value for m in Mention]
    counts = {kind: [0, 0, 0] for kind in kinds}  # tp, fp, fn
    by_level = {level: [0, 0, 0] for level in _UNITS}
    misses: list[Miss] = []
    reports = pairs = correct = 0
    for key, truth, found in cases:
        reports += 1
        for level in _UNITS:
            expected, got = truth.get(level, NONE), found.get(level, NONE)
            if expected == NONE and got == NONE:
                continue
            pairs += 1
            if expected == got:
                correct += 1
            else:
                misses.append(Miss(key, level, expected, got))
            for kind in kinds:
                counts[kind][0] += expected == kind == got
                counts[kind][1] += got == kind != expected
                counts[kind][2] += expected == kind != got
            affirmed = by_level[level]
            affirmed[0] += expected == got == Mention.AFFIRMED.value
            affirmed[1] += got == Mention.AFFIRMED.value != expected
            affirmed[2] += expected == Mention.AFFIRMED.value != got
    return ReadsScore(
        reports=reports,
        pairs=pairs,
        correct=correct,
        affirmed_f1_by_level={
            level: _f1(*c) for level, c in by_level.items() if c[0] + c[1] + c[2]
        },
        kind_f1={kind: _f1(*c) for kind, c in counts.items()},
        misses=tuple(misses),
    )


def score_against_truth(reads: Iterable[ReadRow], truth_file: Path) -> ReadsScore:
    """Score the parsed reads of a reads file against a truth file such as the synthetic
    world's ``reads_truth.csv`` (columns ``study_uid`` and/or ``accession_number``, ``level``,
    ``mention``; one row per level a report names). The reads' own parse is scored; a read
    whose key the truth file does not name says nothing.

    Raises
    ------
    InputFileError
        When the truth file is missing or lacks the columns.
    """
    path = Path(truth_file)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise InputFileError(f"truth file {path} cannot be read: {err}") from err
    if rows and not {"level", "mention"} <= set(rows[0]):
        raise InputFileError(f"truth file {path}: expected level and mention columns")
    truth: dict[str, dict[str, str]] = {}
    for row in rows:
        key = row.get("study_uid") or row.get("accession_number") or ""
        truth.setdefault(key, {})[row["level"]] = row["mention"]
    cases = []
    for read in reads:
        expected = truth.get(read.study_uid) or truth.get(read.accession_number) or {}
        found = {m.level: m.mention.value for m in read.mentions}
        cases.append((read.key, expected, found))
    return score_labels(cases)
