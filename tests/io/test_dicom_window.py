"""The float32 window and rescale match pydicom's reference implementation (PS3.3 C.11)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from auditor.io.dicom import _apply_window, _modality_values


def window_dataset(center: float, width: float, function: str) -> Dataset:
    ds = Dataset()
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.VOILUTFunction = function
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 16
    ds.PixelRepresentation = 0
    return ds


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(2048.0, 4096.0), (550.0, 1024.0), (40.0, 2.0)])
def test_window_matches_pydicom(function: str, center: float, width: float) -> None:
    values = np.linspace(-500, 5000, 4001, dtype=np.float32)
    ds = window_dataset(center, width, function)
    ours, low, high, how = _apply_window(values, ds)
    with np.errstate(over="ignore"):
        reference = np.asarray(apply_voi_lut(values.astype(np.float64), ds, prefer_lut=False))
    with np.errstate(over="ignore"):
        probe = np.asarray(apply_voi_lut(np.array([-1e30, 1e30]), ds, prefer_lut=False))
    expected = np.clip((reference - probe.min()) / (probe.max() - probe.min()), 0, 1)
    assert (low, high) == (0.0, 1.0)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    assert function in how
    assert values[0] == np.float32(-500)  # the caller's array is not modified


@pytest.mark.parametrize(
    ("function", "width", "match"),
    [("LINEAR", 0.5, "at least 1"), ("SIGMOID", 0, "above 0"), ("CUBIC", 10, "unknown")],
)
def test_invalid_windows_raise(function: str, width: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _apply_window(np.zeros(4, np.float32), window_dataset(10, width, function))


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, 0.0), (2.5, -1024.0), (0.5, 100.0)])
def test_rescale_matches_pydicom(slope: float, intercept: float) -> None:
    stored = np.arange(0, 4096, 7, dtype=np.uint16).reshape(1, -1)
    ds = Dataset()
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.BitsStored = 12
    ds.PixelRepresentation = 0
    ours = _modality_values(stored, ds)
    np.testing.assert_allclose(ours, apply_modality_lut(stored, ds), rtol=1e-6)
