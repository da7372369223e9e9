"""The latency bench's arithmetic and its refusals (the figures themselves are measured, never
asserted: see docs/speed.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.errors import UsageError
from auditor.review.latency import LatencyResult, measure_latency, percentile


@pytest.mark.parametrize(
    "values", [[5.0], [3.0, 1.0], [10.0, 40.0, 20.0, 30.0], list(np.linspace(1, 97, 41))]
)
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentile_is_numpys_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@pytest.mark.parametrize(("presses", "dwell"), [(0, 0), (5, -1)])
def test_bad_counts_are_refused_before_anything_starts(
    tmp_path: Path, presses: int, dwell: int
) -> None:
    with pytest.raises(UsageError, match="presses must be at least 1"):
        measure_latency(tmp_path, presses, dwell)


def test_the_first_pass_is_the_presses_that_reach_each_case_once() -> None:
    samples = (90.0, 80.0, 70.0, 10.0, 20.0, 30.0, 40.0)
    result = LatencyResult(
        run_dir="run", cases=4, dwell_ms=0, samples_ms=samples, median_ms=40.0, p95_ms=87.0,
        max_ms=90.0, browser="Chromium", machine="x86_64", viewport="1024 x 768",
    )  # fmt: skip
    assert result.passes() == {"first pass": samples[:3], "later": samples[3:]}
    passes = result.to_json()["passes"]
    assert passes["first pass"] == {"presses": 3, "median_ms": 80.0, "p95_ms": 89.0}
    assert passes["later"]["median_ms"] == 25.0
    assert "first pass: 3 presses, median 80.0 ms" in result.summary()
