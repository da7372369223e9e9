"""DICOM pixel rules of auditor.io.dicom, on small DICOMs generated in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from auditor.errors import ReadError, UnsupportedImageError
from auditor.io.radiograph import read_header, read_radiograph, sniff_format
from tests.helpers.dicom_files import make_dicom, phantom


def test_header_fields_are_read_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = make_dicom(
        tmp_path / "a.dcm",
        modality="DX",
        body_part="LSPINE",
        view="LL",
        series_description="LWS seitlich",
        laterality="U",
    )

    def refuse(self: Dataset) -> None:
        raise AssertionError("read_header decoded pixels")

    monkeypatch.setattr(Dataset, "pixel_array", property(refuse))
    meta = read_header(path)
    assert meta.file_format == "dicom"
    assert (meta.modality, meta.body_part, meta.view_position) == ("DX", "LSPINE", "LL")
    assert meta.series_description == "LWS seitlich"
    assert meta.laterality == "U"
    assert (meta.rows, meta.columns, meta.frames, meta.samples_per_pixel) == (64, 48, 1, 1)
    assert meta.photometric == "MONOCHROME2"
    assert meta.bits_stored == 12
    assert meta.pixel_spacing_mm == (0.15, 0.15)
    assert meta.has_pixels and meta.pixel_data_error == ""
    assert meta.accession_number == "ACC001" and meta.sop_uid


def test_file_without_preamble_or_file_meta_reads(tmp_path: Path):
    path = make_dicom(tmp_path / "bare", file_meta=False, window=(2048, 4096))
    assert path.read_bytes()[128:132] != b"DICM"
    assert sniff_format(path) == "dicom"
    image = read_radiograph(path)
    assert image.pixels.shape == (64, 48)
    assert image.meta.modality == "DX"
    assert image.windowing.startswith("window 2048/4096")


def test_output_is_float32_unit_range_and_bone_bright(tmp_path: Path):
    image = read_radiograph(make_dicom(tmp_path / "a.dcm"))
    pixels = image.pixels
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert pixels[32, 24] > pixels[32, 2] > pixels[2, 2]  # bone > soft tissue > air


def test_monochrome1_is_inverted_to_match_monochrome2(tmp_path: Path):
    stored = phantom()
    mono2 = read_radiograph(make_dicom(tmp_path / "m2.dcm", pixels=stored, window=(2048, 4096)))
    mono1 = read_radiograph(
        make_dicom(
            tmp_path / "m1.dcm",
            pixels=(4095 - stored).astype(np.uint16),
            photometric="MONOCHROME1",
            window=(2047, 4096),
        )
    )
    assert "MONOCHROME1 inverted" in mono1.windowing
    assert np.abs(mono1.pixels - mono2.pixels).max() < 2e-3
    assert mono1.pixels[32, 24] > mono1.pixels[2, 2]


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME1", "INVERSE", True),  # what the DX IOD requires: one inversion, not two
        ("MONOCHROME1", None, True),
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME2", "IDENTITY", False),
    ],
)
def test_presentation_lut_shape(tmp_path: Path, photometric: str, shape: str | None, inverted):
    extra = {"PresentationLUTShape": shape} if shape else {}
    image = read_radiograph(
        make_dicom(tmp_path / "p.dcm", photometric=photometric, window=(2048, 4096), extra=extra)
    )
    bone, air = image.pixels[32, 24], image.pixels[2, 2]
    assert bool(bone < air) is inverted


def test_window_is_applied_in_rescaled_units(tmp_path: Path):
    stored = np.array([[0, 1000, 2000, 3000]] * 4, dtype=np.uint16)
    # Rescale to -1000..2000; window 0..1000 (centre 500, width 1000) in rescaled units.
    image = read_radiograph(
        make_dicom(tmp_path / "w.dcm", pixels=stored, rescale=(1.0, -1000.0), window=(500, 1000))
    )
    row = image.pixels[0]
    assert row[0] == 0.0  # -1000: below the window
    assert row[1] == pytest.approx(0.0, abs=1e-3)  # 0: lower edge
    assert row[2] == 1.0 and row[3] == 1.0  # 1000 and 2000: at/above the upper edge
    assert image.windowing == "window 500/1000 (LINEAR)"


def test_voi_lut_sequence_is_applied(tmp_path: Path):
    stored = np.tile(np.arange(16, dtype=np.uint16), (4, 1))
    path = make_dicom(tmp_path / "lut.dcm", pixels=stored, bits_stored=12)
    ds = dcmread(path)
    item = Dataset()
    # 16 entries starting at input 0, 12-bit output: a step LUT (0 below 8, 4095 from 8 up).
    item.LUTDescriptor = [16, 0, 12]
    item.add_new("LUTData", "US", [0] * 8 + [4095] * 8)
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    image = read_radiograph(path)
    assert image.windowing == "VOI LUT"
    assert np.array_equal(image.pixels[0], np.array([0.0] * 8 + [1.0] * 8, dtype=np.float32))


def test_percentile_fallback_without_voi(tmp_path: Path):
    stored = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    image = read_radiograph(make_dicom(tmp_path / "p.dcm", pixels=stored, bits_stored=16))
    assert image.windowing == "percentile 0.5-99.5"
    assert image.pixels[0, 0] == 0.0 and image.pixels[-1, -1] == 1.0
    assert 0.45 < image.pixels[50, 0] < 0.55


def test_window_that_does_not_fit_the_data_falls_back(tmp_path: Path):
    stored = phantom() + 40000  # every value far above the window
    image = read_radiograph(
        make_dicom(tmp_path / "off.dcm", pixels=stored, bits_stored=16, window=(500, 1000))
    )
    assert "ignored; percentile" in image.windowing
    assert image.pixels.max() == 1.0 and image.pixels.min() == 0.0


def test_bits_stored_masks_unused_high_bits(tmp_path: Path):
    clean = phantom(bits=10)
    dirty = clean | np.uint16(0xF000)  # overlay garbage above bit 9
    a = read_radiograph(make_dicom(tmp_path / "c.dcm", pixels=clean, bits_stored=10))
    b = read_radiograph(make_dicom(tmp_path / "d.dcm", pixels=dirty, bits_stored=10))
    assert np.array_equal(a.pixels, b.pixels)


def _jpeg_garbage(path: Path) -> Path:
    make_dicom(path, pixels=phantom(bits=8).astype(np.uint8), bits_stored=8)
    ds = dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0 this is not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path)
    return path


def _truncated(path: Path) -> Path:
    make_dicom(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    return path


def _text_file(path: Path) -> Path:
    path.write_text("patient list\n")
    return path


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda p: make_dicom(
                p, samples=3, photometric="RGB", pixels=np.zeros((8, 8, 3), np.uint8), bits_stored=8
            ),
            UnsupportedImageError,
            r"colour image \(RGB, 3 samples",
        ),
        (
            lambda p: make_dicom(p, frames=3, pixels=np.zeros((3, 8, 8), np.uint16)),
            UnsupportedImageError,
            r"multi-frame image \(3 frames\)",
        ),
        (lambda p: make_dicom(p, with_pixels=False), UnsupportedImageError, "no pixel data"),
        (_truncated, ReadError, "pixel data truncated"),
        (_jpeg_garbage, ReadError, "pixel data cannot be decoded"),
        (_text_file, UnsupportedImageError, "not an image"),
    ],
    ids=["colour", "multi-frame", "no-pixels", "truncated", "bad-jpeg", "text"],
)
def test_bad_inputs_raise_typed_errors(tmp_path: Path, build, error, match):
    path = build(tmp_path / "bad.dcm")
    with pytest.raises(error, match=match) as info:
        read_radiograph(path)
    assert info.value.path == path


def test_decoder_failure_chains_the_cause(tmp_path: Path):
    with pytest.raises(ReadError) as info:
        read_radiograph(_jpeg_garbage(tmp_path / "bad.dcm"))
    assert info.value.__cause__ is not None


def test_truncated_pixel_data_is_found_from_the_header(tmp_path: Path):
    meta = read_header(_truncated(tmp_path / "t.dcm"))
    assert meta.has_pixels
    assert "truncated" in meta.pixel_data_error


def test_the_header_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import auditor.io.dicom as reader

    path = make_dicom(tmp_path / "a.dcm", window=(2048, 4096))
    parses: list[object] = []
    parse = reader.pydicom.dcmread

    def counted(*args: Any, **kwargs: Any) -> Dataset:
        parses.append(args[0])
        return parse(*args, **kwargs)

    monkeypatch.setattr(reader.pydicom, "dcmread", counted)
    image = read_radiograph(path)
    assert len(parses) == 1
    assert image.windowing == "window 2048/4096 (LINEAR)"


def test_a_rest_pydicom_cannot_continue_is_read_with_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import auditor.io.dicom as reader

    path = make_dicom(tmp_path / "a.dcm", window=(2048, 4096))
    expected = read_radiograph(path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise EOFError("cannot continue")

    monkeypatch.setattr(reader, "read_dataset", refuse)
    image = read_radiograph(path)
    assert np.array_equal(image.pixels, expected.pixels)
    assert (image.windowing, image.meta) == (expected.windowing, expected.meta)
