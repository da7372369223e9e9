"""The reader and the inventory on real files: ../shared/dicom-corpus and tests/data/dicom.

The shared corpus (see its README.md and manifest.tsv) holds real CR/DX radiographs in many
encodings, non-radiograph objects and broken files; none is a lateral spine view. Tests that need
it skip with a message when it is absent (a user's clone); tests/data/dicom holds two small real
files that always run.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from auditor.archive.inventory import inventory, summarise
from auditor.archive.triage import Reason, TriageRules
from auditor.errors import ReadError, UnsupportedImageError
from auditor.io.radiograph import read_header, read_radiograph
from auditor.records import Radiograph
from auditor.vocab import FileStatus
from tests.helpers.paths import DICOM_DATA, REPO_DIR

CORPUS = REPO_DIR.parent / "shared" / "dicom-corpus"
DATA = DICOM_DATA

needs_corpus = pytest.mark.skipif(
    not (CORPUS / "manifest.tsv").is_file(),
    reason=f"shared DICOM corpus not found at {CORPUS} (only present in the team's checkout)",
)


def _manifest() -> dict[str, dict[str, str]]:
    if not (CORPUS / "manifest.tsv").is_file():
        return {}
    with (CORPUS / "manifest.tsv").open(encoding="utf-8") as fp:
        return {row["path"]: row for row in csv.DictReader(fp, delimiter="\t")}


MANIFEST = _manifest()
XRAYS = sorted(p for p in MANIFEST if p.startswith("xray/"))
OTHERS = sorted(p for p in MANIFEST if p.startswith("other/"))
BROKEN = sorted(p for p in MANIFEST if p.startswith("broken/"))

# Stored values of this DX file run 32744..65535 while its window is 2725/5310 and it says
# MONOCHROME2: the window clips every pixel (so the reader falls back to percentiles) and the
# data are a negative of what the header declares. The reader follows the header; see below.
NEGATIVE_DATA = "xray/JPEG2KLossless_1s_1f_u_16_16.dcm"


def _assert_sane(image: Radiograph, rows: int, cols: int) -> None:
    pixels = image.pixels
    assert pixels.dtype == np.float32
    assert pixels.shape == (rows, cols)
    assert np.isfinite(pixels).all()
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert pixels.std() > 0.05, "flat image: windowing lost the content"
    assert image.windowing


def _spine_brighter_than_lungs(pixels: np.ndarray) -> bool:
    """On a frontal chest film the mediastinum and spine (centre) are brighter than the lungs."""
    h, w = pixels.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    centre = pixels[rows, int(0.46 * w) : int(0.54 * w)].mean()
    lungs = np.r_[
        pixels[rows, int(0.22 * w) : int(0.32 * w)].ravel(),
        pixels[rows, int(0.68 * w) : int(0.78 * w)].ravel(),
    ].mean()
    return bool(centre > lungs + 0.1)


def test_bundled_real_files_read_without_the_corpus():
    bare = read_radiograph(DATA / "CR-MONO1-10-chest")
    assert bare.meta.transfer_syntax == ""  # no file meta header in the file
    assert bare.meta.photometric == "MONOCHROME1"
    _assert_sane(bare, 440, 440)
    assert bare.windowing == "window 550/1024 (LINEAR); MONOCHROME1 inverted"
    assert _spine_brighter_than_lungs(bare.pixels)
    dx = read_radiograph(DATA / "dx_image.dcm")
    _assert_sane(dx, 169, 211)
    assert dx.windowing.endswith("MONOCHROME1 inverted")


@needs_corpus
@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize("relpath", XRAYS)
def test_every_xray_decodes_to_a_sane_windowed_image(relpath: str):
    row = MANIFEST[relpath]
    image = read_radiograph(CORPUS / relpath)
    _assert_sane(image, int(row["rows"]), int(row["cols"]))
    header = read_header(CORPUS / relpath)
    assert image.meta == header
    if row["photometric"] == "MONOCHROME1":
        assert "MONOCHROME1 inverted" in image.windowing
    if relpath == NEGATIVE_DATA:
        assert "ignored; percentile 0.5-99.5" in image.windowing
    elif "Modality" in relpath:  # Modality LUT Sequence, no VOI
        assert image.windowing.startswith("percentile")
    else:
        assert image.windowing.startswith("window ")


@needs_corpus
@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize(
    "relpath",
    [
        "xray/966_fixed.dcm",  # DX, MONOCHROME1, JPEG 2000
        "xray/CR-MONO1-10-chest",  # CR, MONOCHROME1, no file meta
        "xray/RG1_J2KI.dcm",  # CR, MONOCHROME1, 15 bits, JPEG 2000 lossy
        pytest.param(
            NEGATIVE_DATA,
            marks=pytest.mark.xfail(strict=True, reason="stored values are a negative"),
        ),
    ],
)
def test_chest_films_show_bone_bright(relpath: str):
    assert _spine_brighter_than_lungs(read_radiograph(CORPUS / relpath).pixels)


@needs_corpus
@pytest.mark.corpus
@pytest.mark.slow
def test_encodings_of_one_image_agree():
    lossless = read_radiograph(CORPUS / "xray/RG2_JPLL.dcm").pixels
    for other in ("xray/RG2_JLSN.dcm", "xray/RG2_JPLY_fixed.dcm"):
        pixels = read_radiograph(CORPUS / other).pixels
        assert np.corrcoef(lossless.ravel(), pixels.ravel())[0, 1] > 0.99
    mono1_lossless = read_radiograph(CORPUS / "xray/RG3_J2KR.dcm").pixels
    mono1_lossy = read_radiograph(CORPUS / "xray/RG3_J2KI.dcm").pixels
    assert np.abs(mono1_lossless - mono1_lossy).mean() < 0.01


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("relpath", OTHERS + BROKEN)
def test_every_other_file_reads_or_is_rejected_with_a_reason(relpath: str):
    try:
        image = read_radiograph(CORPUS / relpath)
    except UnsupportedImageError as err:
        assert relpath.startswith("other/")
        assert "expected" in err.reason
        return
    except ReadError as err:
        assert relpath.startswith("broken/"), err
        assert err.reason
        return
    assert relpath.startswith("other/")
    _assert_sane(image, image.meta.rows, image.meta.columns)


@needs_corpus
@pytest.mark.corpus
def test_inventory_of_the_corpus_accounts_for_every_file():
    files = [p for p in CORPUS.rglob("*") if p.is_file() or p.is_symlink()]
    records = list(inventory(CORPUS, TriageRules()))
    summary = summarise(records)
    assert summary.total == len(files) == len(records)
    assert sum(summary.by_reason.values()) == summary.total
    # None of the corpus is a lateral spine view.
    assert summary.by_status[FileStatus.CANDIDATE] == 0
    reasons = {r.relpath: r.reason for r in records}
    assert reasons["other/CT_small.dcm"] is Reason.NOT_RADIOGRAPH
    assert reasons["other/multiframe.dcm"] is Reason.MULTI_FRAME
    assert reasons["other/SC_rgb.dcm"] is Reason.COLOUR
    assert reasons["other/test_SR.dcm"] is Reason.NO_PIXEL_DATA
    assert reasons["xray/RG3_J2KR.dcm"] is Reason.OTHER_BODY_PART
    assert reasons["README.md"] is Reason.NOT_AN_IMAGE


@needs_corpus
@pytest.mark.corpus
@pytest.mark.slow
def test_forced_inventory_decodes_xrays_and_flags_broken_files():
    """Forced in by a files list and verified: x-rays read, broken files are unreadable rows."""
    small_xrays = ["xray/CR-MONO1-10-chest", "xray/dx_image.dcm", "xray/RG3_J2KI.dcm"]
    listed = frozenset(small_xrays + BROKEN)
    records = {
        r.relpath: r for r in inventory(CORPUS, TriageRules(files=listed), verify_pixels=True)
    }
    for relpath in small_xrays:
        assert records[relpath].status is FileStatus.CANDIDATE, records[relpath]
    assert sum(r.status is FileStatus.CANDIDATE for r in records.values()) == len(small_xrays)
    for relpath in BROKEN:
        assert records[relpath].status is FileStatus.UNREADABLE, records[relpath]
        assert records[relpath].detail
