"""Lossless JPEG and JPEG-LS decoded with imagecodecs give pydicom's pixels, value for value.

``auditor.io.dicom._decode`` tries imagecodecs first for these transfer syntaxes and falls back to
pydicom's plugins on any refusal. Each test compares with ``Dataset.pixel_array`` (pydicom's
decoders) on the same file: real files of the shared corpus, ``tlaudit synth`` output, and small
images written here in every bit depth, with and without bits set above *Bits Stored*.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from auditor.cli.app import app
from auditor.errors import ReadError
from auditor.io import dicom as dicom_io
from auditor.synth.dicom import set_image
from tests.helpers.dicom_files import make_dicom
from tests.helpers.paths import REPO_DIR

CORPUS = REPO_DIR.parent / "shared" / "dicom-corpus"
FAST_SYNTAXES = frozenset(dicom_io._IMAGECODECS_DECODERS)
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"


def _corpus_files() -> list[str]:
    manifest = CORPUS / "manifest.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(encoding="utf-8") as fp:
        rows = csv.DictReader(fp, delimiter="\t")
        return sorted(
            row["path"]
            for row in rows
            if row["transfer_syntax"] in FAST_SYNTAXES and row["pixels_with_pydicom3_pylibjpeg"]
            and row["pixels_with_pydicom3_pylibjpeg"].startswith("decodes")
        )  # fmt: skip


def _assert_same_as_pydicom(path: Path) -> np.ndarray[Any, Any]:
    """``_decode`` on ``path`` equals pydicom's ``pixel_array``: values, dtype and shape."""
    ours = dicom_io._decode(path, pydicom.dcmread(path, force=True))
    theirs = pydicom.dcmread(path, force=True).pixel_array
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    return ours


def _write(
    path: Path, pixels: np.ndarray[Any, Any], bits_stored: int, syntax: str, signed: bool = False
) -> Path:
    """A DICOM radiograph of ``pixels`` encoded in ``syntax`` by the synth's encoder."""
    make_dicom(path, pixels=pixels.astype(np.uint16), bits_stored=bits_stored)
    ds = pydicom.dcmread(path)
    written = set_image(ds, pixels, bits_stored, "MONOCHROME2", syntax, signed)
    assert written == syntax
    ds.save_as(path, enforce_file_format=True)
    return path


def _phantom(bits: int, rows: int = 96, cols: int = 80, seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 2**bits - 1, cols)[None, :] * np.ones((rows, 1))
    noise = rng.integers(0, max(2, 2 ** (bits - 4)), (rows, cols))
    return np.clip(ramp + noise, 0, 2**bits - 1).astype(np.uint16)


@pytest.mark.parametrize(
    ("syntax", "bits"),
    [(JPEG_LOSSLESS_SV1, bits) for bits in (10, 12, 16)]  # the encoder takes no 8-bit lossless
    + [(JPEG_LS_LOSSLESS, bits) for bits in (8, 10, 12, 16)],
)
def test_imagecodecs_gives_pydicoms_pixels(tmp_path: Path, syntax: str, bits: int) -> None:
    path = _write(tmp_path / "image.dcm", _phantom(bits), bits, syntax)
    assert dicom_io._decode_with_imagecodecs(pydicom.dcmread(path)) is not None  # the fast path
    _assert_same_as_pydicom(path)


def test_bits_above_bits_stored_are_cleared_as_pydicom_does(tmp_path: Path) -> None:
    """A lossless JPEG stream of 16-bit values in a file that says Bits Stored 12: pydicom clears
    the 4 high bits (unused bits, PS3.5 8.1.1), and so must the imagecodecs path."""
    pixels = _phantom(16)
    path = _write(tmp_path / "image.dcm", pixels, 16, JPEG_LOSSLESS_SV1)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(path, enforce_file_format=True)
    ours = _assert_same_as_pydicom(path)
    assert int(ours.max()) < 2**12 < int(pixels.max())


def test_signed_images_are_left_to_pydicom(tmp_path: Path) -> None:
    path = _write(tmp_path / "image.dcm", _phantom(12), 12, JPEG_LS_LOSSLESS, signed=True)
    assert dicom_io._decode_with_imagecodecs(pydicom.dcmread(path)) is None
    _assert_same_as_pydicom(path)


def test_a_codec_failure_falls_back_to_pydicom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imagecodecs

    path = _write(tmp_path / "image.dcm", _phantom(12), 12, JPEG_LOSSLESS_SV1)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("refused")

    for name in ("jpeg8_decode", "ljpeg_decode"):
        monkeypatch.setattr(imagecodecs, name, refuse)
    assert dicom_io._decode_with_imagecodecs(pydicom.dcmread(path)) is None
    _assert_same_as_pydicom(path)


def test_a_stream_neither_decoder_reads_is_still_a_read_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "image.dcm", _phantom(12), 12, JPEG_LS_LOSSLESS)
    ds = pydicom.dcmread(path)
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 100])
    with pytest.raises(ReadError, match="pixel data cannot be decoded"):
        dicom_io._decode(path, ds)


@pytest.mark.skipif(not _corpus_files(), reason=f"shared DICOM corpus not found at {CORPUS}")
@pytest.mark.parametrize("relpath", _corpus_files())
def test_corpus_files_decode_to_pydicoms_pixels(relpath: str) -> None:
    _assert_same_as_pydicom(CORPUS / relpath)


def test_synth_compressed_output_decodes_to_pydicoms_pixels(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = CliRunner().invoke(
        app, ["synth", str(out), "--studies", "4", "--seed", "3", "--max-side", "256"]
    )
    assert result.exit_code == 0, result.output
    with (out / "manifest.csv").open(newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh) if r["transfer_syntax"] in FAST_SYNTAXES]
    assert files, "the synthetic world holds no lossless JPEG or JPEG-LS image"
    for name in files:
        _assert_same_as_pydicom(out / "archive" / name)
