"""Classification metrics with confidence intervals, and operating points.

Conventions: label 1 = fracture (positive), score = P(fracture), a crop is called positive when its
score is >= the threshold. Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score, roc_curve

from auditor.model.bundle import OperatingPoint
from auditor.records import positives
from auditor.training.intervals import MIN_COUNT, Estimate, auc_interval, proportion

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
class BinaryMetrics:
    """Accuracy, sensitivity, specificity, PPV, NPV and AUC with 95 % CIs, at one threshold.

    The intervals and the minimum-count marks are :mod:`auditor.training.intervals`'s: exact
    (Clopper-Pearson) for the proportions and DeLong's for the AUC, both by patient when groups
    are given.
    """

    threshold: float
    confusion: Confusion
    accuracy: Estimate
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate
    auc: Estimate

    def as_dict(self) -> dict[str, object]:
        c = self.confusion
        return {
            "threshold": self.threshold,
            "n": c.n,
            "confusion": {"tn": c.tn, "fp": c.fp, "fn": c.fn, "tp": c.tp},
            "accuracy": self.accuracy.as_dict(),
            "sensitivity": self.sensitivity.as_dict(),
            "specificity": self.specificity.as_dict(),
            "ppv": self.ppv.as_dict(),
            "npv": self.npv.as_dict(),
            "auc": self.auc.as_dict(),
        }


def binary_metrics(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float,
    groups: Sequence[str] | npt.NDArray[np.str_] | None = None,
) -> BinaryMetrics:
    """Metrics at ``threshold`` with 95 % CIs, by patient when ``groups`` are given.

    Each proportion's interval is :func:`~auditor.training.intervals.proportion`'s over its own
    denominator (sensitivity over the fractures, PPV over the positive calls, ...), so each is
    marked "too few to estimate" by its own count; accuracy is marked, like the AUC, when either
    class has fewer than :data:`~auditor.training.intervals.MIN_COUNT` cases.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    p = positives(s, threshold)
    g = None if groups is None else np.asarray(groups)

    def share(mask: npt.NDArray[np.bool_], success: npt.NDArray[np.bool_]) -> Estimate:
        return proportion(success[mask], None if g is None else g[mask])

    few_cases = min(int(y.sum()), int((~y).sum())) < MIN_COUNT
    accuracy = share(np.ones(len(y), bool), p == y)
    return BinaryMetrics(
        threshold=threshold,
        confusion=Confusion.from_predictions(y, p),
        accuracy=replace(accuracy, too_few=accuracy.too_few or few_cases),
        sensitivity=share(y, p),
        specificity=share(~y, ~p),
        ppv=share(p, y),
        npv=share(~p, ~y),
        auc=auc_interval(y, s, g),
    )


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
