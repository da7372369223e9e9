"""The latency bench's arithmetic and its refusals (the figures themselves are measured, never
asserted: see docs/speed.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.errors import UsageError
from auditor.review.latency import measure_latency, percentile


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
