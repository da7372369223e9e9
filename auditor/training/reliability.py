"""Reliability of the predicted probabilities: the reliability diagram and the expected
calibration error (ECE).

The crops are put into ``n_bins`` equal-width bins of P(fracture) (the last bin holds 1.0); for
each bin the diagram shows the mean predicted probability against the observed share of
fractures. The ECE is the mean gap between the two, weighted by the bins' sizes (Guo et al.
2017, "On calibration of modern neural networks"). Its 95 % interval is a percentile bootstrap
that resamples whole patients (:func:`auditor.training.intervals.cluster_resamples`); a small set
biases the ECE upwards (each bin's observed share is noisy), so it is marked "too few to
estimate" with the same minimum counts as the other figures.

A low ECE says the probabilities can be read as frequencies on this set; the operating points do
not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from auditor.training.intervals import (
    MIN_COUNT,
    Estimate,
    Groups,
    cluster_resamples,
    percentile_interval,
)

N_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the diagram: its range, crop count, mean P(fracture) and share of fractures."""

    low: float
    high: float
    n: int
    mean_predicted: float
    observed: float


@dataclass(frozen=True)
class Reliability:
    """The diagram's bins (empty ones left out) and the expected calibration error."""

    bins: tuple[ReliabilityBin, ...]
    ece: Estimate
    n_bootstrap: int

    def as_dict(self) -> dict[str, object]:
        return {
            "ece": self.ece.as_dict(),
            "n_bootstrap": self.n_bootstrap,
            "bins": [
                {
                    "low": b.low,
                    "high": b.high,
                    "n": b.n,
                    "mean_predicted": b.mean_predicted,
                    "observed": b.observed,
                }
                for b in self.bins
            ],
        }


def _bin_index(probs: npt.NDArray[np.float64], n_bins: int) -> npt.NDArray[np.int64]:
    return np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(
    labels: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = N_BINS
) -> float:
    """Sum over equal-width bins of (bin share of crops) x |mean P(fracture) - fracture share|.

    NaN for an empty set.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if not len(y):
        return float("nan")
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.abs(
        np.bincount(idx, weights=p, minlength=n_bins)
        - np.bincount(idx, weights=y, minlength=n_bins)
    )
    # sum_b (n_b / N) |mean_p_b - obs_b| = sum_b |sum p - sum y|_b / N
    return float(gap[count > 0].sum() / len(y))


def reliability(
    labels: npt.ArrayLike,
    probs: npt.ArrayLike,
    groups: Groups = None,
    n_bins: int = N_BINS,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Reliability:
    """The reliability diagram's bins and the ECE with a patient-bootstrap 95 % interval.

    Parameters
    ----------
    labels, probs
        Ground truth (1 = fracture) and P(fracture) per crop.
    groups
        Patient of each crop (the bootstrap resamples patients); None: crops are resampled.
    n_bins
        Equal-width bins over 0-1.
    n_bootstrap, seed
        Resamples for the ECE's interval (0: no interval).
    """
    y = np.asarray(labels).astype(np.int64)
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    idx = _bin_index(p, n_bins)
    bins = []
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            bins.append(
                ReliabilityBin(
                    low=b / n_bins,
                    high=(b + 1) / n_bins,
                    n=int(mask.sum()),
                    mean_predicted=float(p[mask].mean()),
                    observed=float(y[mask].mean()),
                )
            )
    value = expected_calibration_error(y, p, n_bins)
    samples = [
        expected_calibration_error(y[i], p[i], n_bins)
        for i in cluster_resamples(groups, len(y), n_bootstrap, seed)
    ]
    low, high = percentile_interval(samples)
    too_few = min(int(y.sum()), int(len(y) - y.sum())) < MIN_COUNT
    method = f"percentile bootstrap ({n_bootstrap} resamples by patient)"
    return Reliability(
        tuple(bins), Estimate(value, low, high, method, too_few=too_few), n_bootstrap
    )
