"""The float32 window and rescale match pydicom's reference implementation (PS3.3 C.11), and
the reader's shortcuts give numpy's own results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from auditor.errors import ReadError
from auditor.io.dicom import (
    MAX_CLIPPED_FRACTION,
    PERCENTILE_WINDOW,
    _apply_window,
    _clipped_fraction,
    _finite_by_construction,
    _modality_values,
    _percentiles,
    _rescale,
)
from auditor.io.radiograph import read_radiograph
from tests.helpers.dicom_files import make_dicom


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
    with np.errstate(over="ignore"):
        reference = np.asarray(apply_voi_lut(values.astype(np.float64), ds, prefer_lut=False))
    ours, low, high, how = _apply_window(values, ds)
    with np.errstate(over="ignore"):
        probe = np.asarray(apply_voi_lut(np.array([-1e30, 1e30]), ds, prefer_lut=False))
    expected = np.clip((reference - probe.min()) / (probe.max() - probe.min()), 0, 1)
    assert (low, high) == (0.0, 1.0)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    assert function in how
    assert ours is values  # in place: the reader owns the array


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
    ours = _modality_values(stored, ds, _rescale(ds))
    np.testing.assert_allclose(ours, apply_modality_lut(stored, ds), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32])
@pytest.mark.parametrize("size", [1, 2, 3, 199, 200, 201, 4001, 65_537])
@pytest.mark.parametrize(("slope", "intercept"), [(1.0, 0.0), (2.5, -1024.0), (-1.5, 100.0)])
def test_percentiles_from_stored_values_are_numpys(
    dtype: type[np.integer], size: int, slope: float, intercept: float
) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(size)
    stored = rng.integers(max(info.min, -5000), min(info.max, 5000), size, dtype=dtype)
    values = _modality_values(stored, Dataset(), (slope, intercept))
    expected = tuple(float(v) for v in np.percentile(values, PERCENTILE_WINDOW))
    assert _percentiles(values, stored, (slope, intercept)) == expected


def test_windowed_in_place_then_rejected_falls_back_on_the_modality_values(tmp_path: Path):
    stored = np.random.default_rng(0).integers(0, 4096, (120, 90), dtype=np.uint16)
    rescale = (-0.7, 12.0)
    plain = read_radiograph(make_dicom(tmp_path / "p.dcm", pixels=stored, rescale=rescale))
    rejected = read_radiograph(
        make_dicom(tmp_path / "w.dcm", pixels=stored, rescale=rescale, window=(90000, 100))
    )
    assert rejected.windowing.endswith("ignored; percentile 0.5-99.5")
    assert np.array_equal(rejected.pixels, plain.pixels)


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "finite"),
    [
        (np.uint16, 1.0, 0.0, True),
        (np.int32, -2.5, -1024.0, True),
        (np.uint16, 1e30, 0.0, True),
        (np.uint16, 1e37, 0.0, False),  # 65535 * 1e37 overflows float32
        (np.uint16, 1.0, float("nan"), False),
        (np.uint16, float("inf"), 0.0, False),
        (np.float32, 1.0, 0.0, False),  # float pixel data may hold NaN
    ],
)
def test_finite_by_construction(dtype: type, slope: float, intercept: float, finite: bool) -> None:
    assert _finite_by_construction(np.zeros(4, dtype), (slope, intercept)) is finite
    assert _finite_by_construction(np.zeros(4, dtype), None) is False  # Modality LUT Sequence


def test_overflowing_rescale_is_still_refused(tmp_path: Path):
    path = make_dicom(tmp_path / "big.dcm", rescale=(1e37, 0.0))
    with pytest.raises(ReadError, match="non-finite"), np.errstate(over="ignore"):
        read_radiograph(path)


@pytest.mark.parametrize(
    ("at_zero", "at_one", "rejected"),
    [
        (995, 0, True),
        (0, 995, True),
        (5, 995, True),
        (990, 10, False),
        (500, 500, False),
        (0, 0, False),
    ],
)
def test_clipped_fraction_decides_as_both_counts_would(at_zero: int, at_one: int, rejected: bool):
    scaled = np.full(1000, 0.5, np.float32)
    scaled[:at_zero] = 0.0
    scaled[len(scaled) - at_one :] = 1.0
    fraction = _clipped_fraction(scaled)
    assert bool(fraction > MAX_CLIPPED_FRACTION) is rejected
    if rejected:  # the figure the windowing text gives
        assert fraction == max(at_zero, at_one) / 1000
