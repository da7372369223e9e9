"""Confidence intervals for every figure ``train``, ``evaluate`` and ``calibrate`` print, and the
rule that marks a figure resting on too few cases.

Proportions (sensitivity, specificity, PPV, NPV, accuracy, study-level rates): the exact
Clopper-Pearson interval (:func:`clopper_pearson`, scipy's ``binomtest``), which keeps its
coverage at the small counts where a bootstrap collapses: 3 of 3 fractures found gives
100 % (29.2-100 %), where a percentile bootstrap gives 100 % (100-100 %). The Wilson score interval
(:func:`wilson`) is here too, for comparison; it is shorter and may undercover near 0 and 1.

Several vertebrae of one patient are not independent. :func:`proportion` corrects for that with a
**design effect** rather than a patient-clustered bootstrap: the variance of the proportion is
estimated with the ratio (cluster-robust) estimator over patients, its ratio to the binomial
variance is the design effect, and the exact interval is computed at the effective sample size
``n / deff`` (Korn and Graubard 1998, *Survey Methodology* 24:193-201). Why this and not a
bootstrap: it is deterministic; it never gives a narrower interval than the plain exact one (the
design effect is floored at 1); it reduces to the exact interval when each patient gives one
vertebra, or when the data cannot show any clustering (a proportion of 0 or 1, where every
bootstrap resample repeats it); and it needs no resampling loop.

AUC: DeLong's variance (DeLong, DeLong and Clarke-Pearson 1988, computed with midranks as in Sun
and Xu 2014), in Obuchowski's form for clustered data (Obuchowski 1997, *Biometrics* 53:567-578),
which sums each patient's structural components, so vertebrae of one patient count once; it is
DeLong's own variance when each patient gives one vertebra. The interval is taken on the logit
scale (it stays inside 0-1 and covers better near 1 than the symmetric one). Where the variance is
0 (perfect separation, or all scores tied) it is replaced by the exact interval of
``AUC x m`` successes in ``m = min(positives, negatives)`` disjoint positive-negative pairs, each
of which the model orders right with probability AUC.

Minimum counts: a proportion whose denominator is under :data:`MIN_COUNT`, and an AUC or accuracy
with fewer than :data:`MIN_COUNT` positives or negatives, is still printed with its interval but
marked :data:`TOO_FEW` (:attr:`Estimate.too_few`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import beta, binomtest, norm, rankdata

#: Two-sided confidence level of every interval.
CONFIDENCE = 0.95
#: A figure resting on fewer cases than this (positives, negatives, or its denominator) is marked.
MIN_COUNT = 10
#: The mark of such a figure.
TOO_FEW = "too few to estimate"

Groups = Sequence[str] | npt.NDArray[Any] | None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % confidence interval and where it comes from.

    ``count`` and ``total`` are the numerator and denominator of a proportion (None for an AUC or
    a bootstrap statistic); ``too_few`` marks a figure resting on fewer than :data:`MIN_COUNT`
    cases.
    """

    value: float
    low: float
    high: float
    method: str = ""
    count: int | None = None
    total: int | None = None
    too_few: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``value``, ``ci_low``, ``ci_high``, ``method``, ``too_few`` and, for a proportion,
        ``count`` and ``total``."""
        out: dict[str, Any] = {"value": self.value, "ci_low": self.low, "ci_high": self.high}
        out["method"] = self.method
        if self.count is not None:
            out["count"], out["total"] = self.count, self.total
        out["too_few"] = self.too_few
        return out

    def percent(self, digits: int = 1, counts: bool = True, mark: bool = True) -> str:
        """``87.5% (67.6-97.3%), 21/24``, with ``, too few to estimate`` where marked.

        ``counts`` and ``mark`` leave out the ``k/n`` and the mark (for a table that shows them
        in columns of their own).
        """
        return _text(self, lambda v: _pct(v, digits), "%", counts, mark)

    def decimal(self, digits: int = 3, counts: bool = False, mark: bool = True) -> str:
        """``0.880 (0.781-0.939)``, with the counts and mark as in :meth:`percent`."""
        return _text(
            self, lambda v: "n/a" if not math.isfinite(v) else f"{v:.{digits}f}", "", counts, mark
        )


def _pct(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _text(est: Estimate, fmt: Any, unit: str, counts: bool, mark: bool) -> str:
    if not math.isfinite(est.value):
        text = "n/a"
    else:
        text = f"{fmt(est.value)}{unit}"
        if math.isfinite(est.low) and math.isfinite(est.high):
            text += f" ({fmt(est.low)}-{fmt(est.high)}{unit})"
    if counts and est.count is not None:
        text += f", {est.count}/{est.total}"
    if mark and est.too_few:
        text += f", {TOO_FEW}"
    return text


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of ``k`` successes in ``n`` trials; NaNs when ``n`` is 0.

    >>> [round(v, 3) for v in clopper_pearson(3, 3)]
    [0.292, 1.0]
    """
    if n <= 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials; NaNs when ``n`` is 0."""
    if n <= 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _exact_effective(k: float, n: float, confidence: float) -> tuple[float, float]:
    """The Clopper-Pearson interval written with beta quantiles, for non-integer (effective)
    counts; equal to :func:`clopper_pearson` for integers."""
    alpha = 1.0 - confidence
    low = 0.0 if k <= 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def design_effect(successes: npt.ArrayLike, groups: Groups) -> float:
    """Variance of a clustered proportion over its variance with independent units, floored at 1.

    ``successes`` holds one 0/1 outcome per unit (vertebra), ``groups`` its cluster (patient). The
    clustered variance is the ratio estimator's, ``C / (C - 1) * sum_i (y_i - p m_i)^2 / n^2``
    over the ``C`` clusters with ``y_i`` successes in ``m_i`` units; the independent one is the
    same formula with one unit per cluster, ``n / (n - 1) * n p (1 - p) / n^2``, so that clusters
    of one give exactly 1. Returns 1 without groups, with fewer than two clusters, or when the
    proportion is 0 or 1.
    """
    y = np.asarray(successes, dtype=np.float64)
    n = len(y)
    if groups is None or n == 0:
        return 1.0
    _, cluster = np.unique(np.asarray(groups), return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    p = float(y.mean())
    if n_clusters < 2 or p <= 0.0 or p >= 1.0:
        return 1.0
    y_i = np.bincount(cluster, weights=y, minlength=n_clusters)
    m_i = np.bincount(cluster, minlength=n_clusters).astype(np.float64)
    clustered = n_clusters / (n_clusters - 1) * float(np.sum((y_i - p * m_i) ** 2))
    independent = n / (n - 1) * n * p * (1 - p)
    return max(1.0, clustered / independent)


def proportion(
    successes: npt.ArrayLike,
    groups: Groups = None,
    confidence: float = CONFIDENCE,
    min_count: int = MIN_COUNT,
) -> Estimate:
    """A proportion with its exact interval, corrected for clustering when ``groups`` are given.

    Parameters
    ----------
    successes
        One 0/1 (or bool) outcome per unit, e.g. "called positive" for every fractured vertebra
        (sensitivity).
    groups
        The cluster (patient) of each unit; None when units are independent.
    confidence
        Two-sided level.
    min_count
        Below this many units the estimate is marked :data:`TOO_FEW`.

    Returns
    -------
    Estimate
        Value ``k / n``, the Clopper-Pearson interval at the effective sample size (see the module
        docstring), ``count`` ``k`` and ``total`` ``n``. NaN value and interval when ``n`` is 0.
    """
    y = np.asarray(successes, dtype=bool)
    n, k = len(y), int(y.sum())
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, "Clopper-Pearson exact", 0, 0, True)
    deff = design_effect(y, groups)
    if deff <= 1.0:
        low, high = clopper_pearson(k, n, confidence)
        method = "Clopper-Pearson exact"
    else:
        low, high = _exact_effective(k / deff, n / deff, confidence)
        method = f"Clopper-Pearson exact at effective n (design effect {deff:.2f} by patient)"
    return Estimate(k / n, low, high, method, k, n, n < min_count)


def delong_variance(
    labels: npt.ArrayLike, scores: npt.ArrayLike, groups: Groups = None
) -> tuple[float, float]:
    """AUC and its DeLong variance (Obuchowski's clustered form when ``groups`` are given).

    With ``V10`` the share of negatives each positive outscores (ties count one half), ``V01`` the
    share of positives that outscore each negative, and per cluster ``i`` their sums ``V10_i``,
    ``V01_i`` over its ``m_i`` positives and ``n_i`` negatives::

        S10 = I10 / ((I10 - 1) M) * sum_i (V10_i - m_i A)^2
        S01 = I01 / ((I01 - 1) N) * sum_i (V01_i - n_i A)^2
        S11 = I / (I - 1) * sum_i (V10_i - m_i A)(V01_i - n_i A)
        var(A) = S10 / M + S01 / N + 2 S11 / (M N)

    where ``M``, ``N`` are the numbers of positives and negatives and ``I10``, ``I01``, ``I`` the
    numbers of clusters holding a positive, a negative, any unit. One unit per cluster gives
    DeLong's ``var = S10 / M + S01 / N`` with the usual sample variances.

    Returns (NaN, NaN) when a class is absent.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], s[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return math.nan, math.nan
    rank_all = rankdata(s)  # midranks: ties count one half
    v10 = np.zeros(len(s))
    v01 = np.zeros(len(s))
    v10[y] = (rank_all[y] - rankdata(pos)) / n
    v01[~y] = 1.0 - (rank_all[~y] - rankdata(neg)) / m
    auc = float(v10[y].mean())
    g = (
        np.arange(len(s))
        if groups is None
        else np.unique(np.asarray(groups), return_inverse=True)[1]
    )
    n_clusters = int(g.max()) + 1
    m_i = np.bincount(g, weights=y.astype(np.float64), minlength=n_clusters)
    n_i = np.bincount(g, weights=(~y).astype(np.float64), minlength=n_clusters)
    d10 = np.bincount(g, weights=v10, minlength=n_clusters) - m_i * auc
    d01 = np.bincount(g, weights=v01, minlength=n_clusters) - n_i * auc
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    s10 = i10 / ((i10 - 1) * m) * float(np.sum(d10**2)) if i10 > 1 else 0.0
    s01 = i01 / ((i01 - 1) * n) * float(np.sum(d01**2)) if i01 > 1 else 0.0
    s11 = n_clusters / (n_clusters - 1) * float(np.sum(d10 * d01)) if n_clusters > 1 else 0.0
    return auc, max(0.0, s10 / m + s01 / n + 2 * s11 / (m * n))


def auc_interval(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    groups: Groups = None,
    confidence: float = CONFIDENCE,
    min_count: int = MIN_COUNT,
) -> Estimate:
    """AUC with DeLong's interval on the logit scale, by patient when ``groups`` are given.

    Marked :data:`TOO_FEW` with fewer than ``min_count`` positives or negatives. Where the
    variance is 0 the interval is the exact one over disjoint pairs (module docstring).
    NaN when a class is absent.
    """
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    too_few = min(n_pos, n_neg) < min_count
    auc, var = delong_variance(y, scores, groups)
    method = "DeLong, logit scale" + (", by patient" if groups is not None else "")
    if not math.isfinite(auc):
        return Estimate(math.nan, math.nan, math.nan, method, too_few=True)
    z = float(norm.ppf(0.5 + confidence / 2))
    if var > 0 and 0 < auc < 1:
        centre = math.log(auc / (1 - auc))
        half = z * math.sqrt(var) / (auc * (1 - auc))
        low, high = _expit(centre - half), _expit(centre + half)
    else:
        pairs = min(n_pos, n_neg)
        low, high = _exact_effective(auc * pairs, float(pairs), confidence)
        method = f"exact over {pairs} disjoint pairs (DeLong variance 0)"
    return Estimate(auc, low, high, method, too_few=too_few)


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def cluster_resamples(
    groups: Groups, n_units: int, n_resamples: int, seed: int
) -> Iterator[npt.NDArray[np.int64]]:
    """Index arrays of a cluster bootstrap: each resample draws whole clusters with replacement.

    Without ``groups`` every unit is its own cluster.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(n_units)]
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, bounds)
    for _ in range(n_resamples):
        pick = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[i] for i in pick]).astype(np.int64)


def percentile_interval(
    samples: npt.ArrayLike, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (non-finite ones dropped; NaNs if none)."""
    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [alpha, 100 - alpha])
    return float(low), float(high)
