"""PNG, JPEG and TIFF radiographs through the same entry point as DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from auditor.errors import ReadError, UnsupportedImageError
from auditor.io.radiograph import read_header, read_radiograph, sniff_format


def _ramp(dtype: type, top: int) -> np.ndarray:
    return np.linspace(0, top, 30 * 20).reshape(30, 20).astype(dtype)


def test_png_8_bit_is_taken_as_display_values(tmp_path: Path):
    path = tmp_path / "a.png"
    Image.fromarray(_ramp(np.uint8, 255)).save(path)
    assert sniff_format(path) == "png"
    meta = read_header(path)
    assert (meta.rows, meta.columns, meta.bits_stored, meta.file_format) == (30, 20, 8, "png")
    image = read_radiograph(path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (30, 20)
    assert image.pixels[0, 0] == 0.0 and image.pixels[-1, -1] == 1.0
    assert image.windowing == "8-bit display values"


def test_png_16_bit_uses_percentile_windowing(tmp_path: Path):
    path = tmp_path / "a.png"
    Image.fromarray(_ramp(np.uint16, 4095)).save(path)
    assert read_header(path).bits_stored in (16, 32)
    image = read_radiograph(path)
    assert image.windowing == "percentile 0.5-99.5"
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0
    assert image.pixels[15, 10] == pytest.approx(0.5, abs=0.05)


def test_jpeg_grey_and_grey_stored_as_rgb(tmp_path: Path):
    grey = _ramp(np.uint8, 255)
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / "rgb.jpg", quality=95)
    a = read_radiograph(tmp_path / "g.jpg")
    b = read_radiograph(tmp_path / "rgb.jpg")
    assert sniff_format(tmp_path / "g.jpg") == "jpeg"
    assert np.abs(a.pixels - grey / 255).mean() < 0.02
    assert np.abs(b.pixels - grey / 255).mean() < 0.02


def test_tiff_16_bit_and_white_is_zero_inverted(tmp_path: Path):
    ramp = _ramp(np.uint16, 60000)
    tifffile.imwrite(tmp_path / "a.tif", ramp, photometric="minisblack")
    tifffile.imwrite(tmp_path / "w.tif", ramp, photometric="miniswhite")
    a = read_radiograph(tmp_path / "a.tif")
    w = read_radiograph(tmp_path / "w.tif")
    assert read_header(tmp_path / "w.tif").photometric == "MONOCHROME1"
    assert a.pixels[-1, -1] == 1.0 and w.pixels[-1, -1] == 0.0
    assert np.allclose(a.pixels, 1.0 - w.pixels, atol=1e-6)
    assert "WhiteIsZero inverted" in w.windowing


def _colour_png(path: Path) -> Path:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(path)
    return path


def _multipage_tiff(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
    return path


@pytest.mark.parametrize(
    ("build", "match"),
    [(_colour_png, "colour image"), (_multipage_tiff, r"multi-page TIFF \(3 pages\)")],
    ids=["colour", "multi-page"],
)
def test_unsupported_raster_images(tmp_path: Path, build, match):
    with pytest.raises(UnsupportedImageError, match=match):
        read_radiograph(build(tmp_path / "bad.tif"))


def test_broken_tiff_header_is_a_read_error(tmp_path: Path):
    # Looks like TIFF (a DICOM preamble can), but the first page offset points past the end.
    path = tmp_path / "x.tif"
    path.write_bytes(b"II*\x00" + (500000).to_bytes(4, "little") + bytes(200))
    with pytest.raises(ReadError, match="cannot read TIFF header"):
        read_radiograph(path)
