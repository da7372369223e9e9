"""Shared fixtures for the whole suite.

``TLAUDIT_TEST_AUTO_PRECISION=bf16`` makes ``--precision auto`` resolve as it does on a CPU with
native bf16 (AVX-512 BF16 or AMX), on any CPU: ``.ci/run`` reruns the numerics tests so, since
nothing in the suite may depend on ``auto`` choosing float32. Only in-process code sees it.
"""

from __future__ import annotations

import os

import pytest

AUTO_PRECISION_ENV = "TLAUDIT_TEST_AUTO_PRECISION"


@pytest.fixture(autouse=True)
def _auto_precision_as_on_a_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    forced = os.environ.get(AUTO_PRECISION_ENV, "")
    if not forced:
        return
    if forced != "bf16":
        raise pytest.UsageError(f"{AUTO_PRECISION_ENV} must be bf16 or unset, not {forced!r}")
    from auditor.model import infer

    monkeypatch.setattr(infer, "cpu_has_native_bf16", lambda: True)
