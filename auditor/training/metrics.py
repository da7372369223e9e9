"""Classification metrics, bootstrap confidence intervals and operating points.

Conventions: label 1 = fracture (positive), score = P(fracture), a crop is called positive when its
score is >= the threshold. Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve

from auditor.model.bundle import OperatingPoint
from auditor.records import positives

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Confusion:
    """2 x 2 confusion counts."""

    tn: int
    fp: int
    fn: int
    tp: int

    @classmethod
    def from_predictions(cls, labels: npt.ArrayLike, predicted: npt.ArrayLike) -> Confusion:
        y = np.asarray(labels).astype(bool)
        p = np.asarray(predicted).astype(bool)
        return cls(
            tn=int(np.sum(~y & ~p)),
            fp=int(np.sum(~y & p)),
            fn=int(np.sum(y & ~p)),
            tp=int(np.sum(y & p)),
        )

    @property
    def n(self) -> int:
        return self.tn + self.fp + self.fn + self.tp

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def sensitivity(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float:
        return _ratio(self.tn, self.tn + self.fn)

    @property
    def balanced_accuracy(self) -> float:
        return (self.sensitivity + self.specificity) / 2.0

    def as_matrix(self) -> npt.NDArray[np.int64]:
        """[[TN, FP], [FN, TP]] (rows: truth no_fracture/fracture; columns: model)."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]], dtype=np.int64)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def roc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC curve as (false-positive rate, true-positive rate, thresholds)."""
    fpr, tpr, thr = roc_curve(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    return fpr, tpr, thr


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95 % bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


@dataclass(frozen=True)
class BinaryMetrics:
    """Accuracy, sensitivity, specificity and AUC with CIs, at one threshold."""

    threshold: float
    confusion: Confusion
    accuracy: Estimate
    sensitivity: Estimate
    specificity: Estimate
    auc: Estimate
    n_bootstrap: int

    def as_dict(self) -> dict[str, object]:
        c = self.confusion
        return {
            "threshold": self.threshold,
            "n": c.n,
            "confusion": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
            "accuracy": self.accuracy.as_dict(),
            "sensitivity": self.sensitivity.as_dict(),
            "specificity": self.specificity.as_dict(),
            "auc": self.auc.as_dict(),
            "n_bootstrap": self.n_bootstrap,
        }


def binary_metrics(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float,
    groups: Sequence[str] | npt.NDArray[np.str_] | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> BinaryMetrics:
    """Metrics at ``threshold`` with percentile bootstrap 95 % CIs.

    When ``groups`` (patients) are given the bootstrap resamples whole patients (cluster
    bootstrap), because vertebrae of one radiograph are not independent.
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    conf = Confusion.from_predictions(y, positives(s, threshold))
    point = (conf.accuracy, conf.sensitivity, conf.specificity, auc(y, s))
    samples = _bootstrap(y, s, threshold, groups, n_bootstrap, seed)
    ests = []
    for j, value in enumerate(point):
        col = samples[:, j] if len(samples) else np.zeros(0)
        col = col[np.isfinite(col)]
        if len(col):
            lo, hi = np.percentile(col, [2.5, 97.5])
            ests.append(Estimate(float(value), float(lo), float(hi)))
        else:
            ests.append(Estimate(float(value), float("nan"), float("nan")))
    return BinaryMetrics(threshold, conf, ests[0], ests[1], ests[2], ests[3], n_bootstrap)


def _bootstrap(
    y: npt.NDArray[np.int64],
    s: FloatArray,
    threshold: float,
    groups: Sequence[str] | npt.NDArray[np.str_] | None,
    n_bootstrap: int,
    seed: int,
) -> FloatArray:
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y))]
    else:
        g = np.asarray(groups)
        _, inverse = np.unique(g, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        members = np.split(order, bounds)
    out = np.full((n_bootstrap, 4), np.nan)
    pred = positives(s, threshold)
    for b in range(n_bootstrap):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[i] for i in pick])
        yb, pb = y[idx], pred[idx]
        c = Confusion.from_predictions(yb, pb)
        out[b, :3] = (c.accuracy, c.sensitivity, c.specificity)
        if 0 < yb.sum() < len(yb):
            out[b, 3] = roc_auc_score(yb, s[idx])
    return out


def choose_operating_points(
    labels: npt.ArrayLike, scores: npt.ArrayLike, target: float = 0.95
) -> dict[str, OperatingPoint]:
    """Operating points on validation data.

    - ``balanced``: the threshold maximising Youden's J (sensitivity + specificity - 1);
    - ``sensitive``: the highest threshold with sensitivity >= ``target``, but never above
      ``balanced``'s;
    - ``specific``: the lowest threshold with specificity >= ``target``, but never below
      ``balanced``'s.

    So ``sensitive`` flags at least what ``balanced`` flags and ``specific`` at most, as their
    names promise. Without the clamp, a model whose ``balanced`` point already exceeds ``target``
    on both sides would get a ``sensitive`` point above it (fewer flags, fewer fractures found)
    and a ``specific`` point below it; where the clamp applies, the point equals ``balanced``,
    which meets the target too.

    Thresholds are the observed scores themselves (a crop with score >= threshold is positive),
    so the figures recorded with each point are exactly reproducible on the validation data.

    Raises
    ------
    ValueError
        When the validation data lack one of the classes.
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("operating points need validation data with both classes")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    # roc_curve's first threshold is +inf (nothing positive); keep finite ones.
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    spec = 1.0 - fpr
    j = tpr + spec - 1.0
    best = int(np.argmax(j))  # thresholds descend, so ties go to the higher threshold
    points = {
        "balanced": OperatingPoint(
            "balanced", float(thr[best]), float(tpr[best]), float(spec[best])
        )
    }
    # thresholds descend with the index: a larger index flags more
    ok_sens = np.flatnonzero(tpr >= target)
    i = max(int(ok_sens[0]), best)  # highest threshold reaching the target, at most balanced's
    points["sensitive"] = OperatingPoint("sensitive", float(thr[i]), float(tpr[i]), float(spec[i]))
    ok_spec = np.flatnonzero(spec >= target)
    i = int(ok_spec[-1]) if len(ok_spec) else 0  # lowest threshold keeping the specificity
    i = min(i, best)  # ... at least balanced's
    points["specific"] = OperatingPoint("specific", float(thr[i]), float(tpr[i]), float(spec[i]))
    return points


def sensitivity_by(
    labels: npt.ArrayLike, predicted: npt.ArrayLike, keys: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Sensitivity among fractures, per key (level or AO type): detected, total, sensitivity."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predicted).astype(bool)
    out: dict[str, dict[str, float | int]] = {}
    for key in sorted({k for k, is_pos in zip(keys, y, strict=True) if is_pos}):
        mask = y & (np.asarray(keys) == key)
        total = int(mask.sum())
        found = int((p & mask).sum())
        out[key] = {"detected": found, "total": total, "sensitivity": found / total}
    return out


def format_pct(value: float, digits: int = 1) -> str:
    """``0.885`` -> ``88.5%``; NaN -> ``n/a``."""
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"
