"""``review-stats``: what the review of a run says about the scan, per reviewer and overall.

Definitions (one place; the command and its JSON only format these):

* A study is **reviewed** when the reviewer has given it a study verdict; vertebra decisions
  alone do not make a study reviewed (the verdict is the study's conclusion).
* **Flags reviewed**: flagged studies (those with a queue rank in ``cases.json``) reviewed, of all
  flagged. **Confirmed misses**: flagged studies reviewed as *confirmed miss*.
* **PPV of likely missed**: confirmed misses among the reviewed studies the scan flagged *likely
  missed*, with its exact (Clopper-Pearson) 95 % interval. A study reviewed *unsure* counts as
  reviewed and not confirmed, so the figure never flatters the scan.
* **Miss rate in the unflagged sample**: confirmed misses among the reviewed studies of the
  reviewer's unflagged sample (:meth:`~auditor.review.store.ReviewStore.sample`), with its
  exact 95 % interval.
* **Overall**: every reviewer's verdicts together. A study counts when the reviewers who gave it
  a verdict agree; one where they disagree is left out and counted. The overall sample is the
  union of the reviewers' samples.
* **Agreement**: for each pair of reviewers, Cohen's kappa over the vertebra boxes both decided
  (fracture, no fracture, unsure; deleted boxes left out) and over the studies both gave a
  verdict, with the number of items. Fewer than two items, or one category only, is *not enough
  overlap*, never a number.

A proportion with nothing reviewed has no value and no interval: it says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from auditor.records import StudyCase, StudyStatus
from auditor.review.run import ReviewRun, load_run
from auditor.review.store import ReviewState, open_existing
from auditor.vocab import StudyVerdict

#: Confidence level of every interval.
CONFIDENCE = 0.95
NOT_ENOUGH_OVERLAP = "not enough overlap"
NOTHING_REVIEWED = "nothing reviewed"


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its exact 95 % interval; value and interval are None when n is 0."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    def __str__(self) -> str:
        if self.value is None or self.low is None or self.high is None:
            return NOTHING_REVIEWED
        return f"{self.value:.1%} ({self.k}/{self.n}; 95% CI {self.low:.1%}-{self.high:.1%}, exact)"


def proportion(k: int, n: int) -> Proportion:
    """``k`` of ``n`` with its exact Clopper-Pearson interval
    (``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``)."""
    if n == 0:
        return Proportion(k, n, None, None, None)
    from scipy.stats import binomtest

    interval = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return Proportion(k, n, k / n, float(interval.low), float(interval.high))


@dataclass(frozen=True)
class ReviewerStats:
    """The figures of one reviewer (or of all together, ``reviewer`` = ``"overall"``)."""

    reviewer: str
    flagged: int
    flagged_reviewed: int
    confirmed_misses: int
    ppv_likely_missed: Proportion
    sample_size: int
    sample_miss_rate: Proportion
    disagreements: int  # overall only: studies left out because the reviewers disagree


@dataclass(frozen=True)
class Agreement:
    """Cohen's kappa of two reviewers over ``items`` shared items (``scope``: ``vertebra`` or
    ``study``); ``kappa`` is None with ``note`` saying why when the overlap cannot support one."""

    reviewers: tuple[str, str]
    scope: str
    items: int
    kappa: float | None
    note: str

    def __str__(self) -> str:
        if self.kappa is None:
            return f"{self.note} ({self.items} shared)"
        return f"{self.kappa:.3f} ({self.items} shared)"


@dataclass(frozen=True)
class ReviewStats:
    """Everything ``review-stats`` reports on a run."""

    run_dir: str
    flagged: int
    reviewers: tuple[ReviewerStats, ...]
    overall: ReviewerStats | None
    agreement: tuple[Agreement, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (proportions with ``k``, ``n``, ``value``, ``low``, ``high``)."""
        return asdict(self)


def kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' paired labels, None when fewer than two pairs or a single
    category (the statistic is undefined or meaningless there)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} labels against {len(second)}")
    if len(first) < 2 or len(set(first) | set(second)) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    value = float(cohen_kappa_score(list(first), list(second)))
    return None if math.isnan(value) else value


def _figures(
    name: str,
    studies: Sequence[StudyCase],
    verdicts: Mapping[str, StudyVerdict],
    sample: set[str],
    disagreements: int = 0,
) -> ReviewerStats:
    flagged = [case for case in studies if case.queue_rank is not None]
    reviewed = [case for case in flagged if case.key in verdicts]
    likely = [case for case in reviewed if case.status is StudyStatus.LIKELY_MISSED]
    unflagged = {case.key for case in studies if case.queue_rank is None}
    sampled = sample & unflagged
    sampled_reviewed = [key for key in sampled if key in verdicts]

    def misses(keys: Sequence[str]) -> int:
        return sum(verdicts[key] is StudyVerdict.CONFIRMED_MISS for key in keys)

    return ReviewerStats(
        reviewer=name,
        flagged=len(flagged),
        flagged_reviewed=len(reviewed),
        confirmed_misses=misses([case.key for case in reviewed]),
        ppv_likely_missed=proportion(misses([case.key for case in likely]), len(likely)),
        sample_size=len(sampled),
        sample_miss_rate=proportion(misses(sampled_reviewed), len(sampled_reviewed)),
        disagreements=disagreements,
    )


def _verdicts(state: ReviewState) -> dict[str, StudyVerdict]:
    return {
        key: review.verdict for key, review in state.studies.items() if review.verdict is not None
    }


def compute_stats(run: ReviewRun, states: Sequence[ReviewState]) -> ReviewStats:
    """The figures of the module docstring for ``run`` under the reviews ``states``."""
    per_reviewer = tuple(
        _figures(state.reviewer, run.studies, _verdicts(state), set(state.sample))
        for state in states
    )
    overall: ReviewerStats | None = None
    if states:
        given: dict[str, set[StudyVerdict]] = {}
        for state in states:
            for key, verdict in _verdicts(state).items():
                given.setdefault(key, set()).add(verdict)
        agreed = {key: next(iter(found)) for key, found in given.items() if len(found) == 1}
        sample = {key for state in states for key in state.sample}
        overall = _figures("overall", run.studies, agreed, sample, len(given) - len(agreed))
    agreement: list[Agreement] = []
    for a, b in itertools.combinations(states, 2):
        pair = (a.reviewer, b.reviewer)
        decided: list[tuple[str, str]] = []
        for box in sorted(a.vertebrae):
            mine, theirs = a.vertebrae[box], b.vertebrae.get(box)
            if theirs is None or mine.deleted or theirs.deleted:
                continue
            if mine.decision is not None and theirs.decision is not None:
                decided.append((mine.decision.value, theirs.decision.value))
        agreement.append(
            _agreement(pair, "vertebra", [d[0] for d in decided], [d[1] for d in decided])
        )
        first, second = _verdicts(a), _verdicts(b)
        studies = sorted(set(first) & set(second))
        agreement.append(
            _agreement(
                pair,
                "study",
                [first[k].value for k in studies],
                [second[k].value for k in studies],
            )
        )
    flagged = sum(case.queue_rank is not None for case in run.studies)
    return ReviewStats(
        run_dir=str(run.run_dir),
        flagged=flagged,
        reviewers=per_reviewer,
        overall=overall,
        agreement=tuple(agreement),
    )


def _agreement(
    pair: tuple[str, str], scope: str, first: Sequence[str], second: Sequence[str]
) -> Agreement:
    value = kappa(first, second)
    return Agreement(pair, scope, len(first), value, NOT_ENOUGH_OVERLAP if value is None else "")


def review_stats(run_dir: Path) -> ReviewStats:
    """Open a reviewed run folder and compute its :class:`ReviewStats`.

    Raises
    ------
    InputFileError
        When the run folder or its review store cannot be read.
    UsageError
        When the run has no review store yet.
    """
    run = load_run(run_dir)
    with open_existing(run.run_dir) as store:
        states = [store.state(name) for name in store.reviewers()]
    return compute_stats(run, states)
