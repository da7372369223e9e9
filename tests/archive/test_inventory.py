"""Inventory over a mixed archive: every file one row, counts that add up, bad files as rows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from auditor.archive.inventory import (
    CSV_COLUMNS,
    inventory,
    summarise,
    write_accounting_csv,
)
from auditor.archive.triage import Reason, TriageRules
from auditor.io.radiograph import read_radiograph
from auditor.vocab import FileStatus
from tests.helpers.dicom_files import make_dicom
from tests.helpers.paths import DICOM_DATA


def _mixed_archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    good = root / "2019" / "patient1"
    make_dicom(good / "lat.dcm", body_part="LSPINE", view="LL")
    make_dicom(good / "ap.dcm", body_part="LSPINE", view="AP")
    make_dicom(good / "kw", modality="CR", body_part=None, view=None,
               series_description="LWS seitlich", file_meta=False)  # fmt: skip
    make_dicom(root / "2019" / "patient2" / "chest.dcm", body_part="CHEST", view="PA",
               series_description="=HYPERLINK(\"http://x\")")  # fmt: skip
    make_dicom(root / "foreign" / "ct.dcm", modality="CT", body_part="LSPINE", view=None)
    make_dicom(root / "foreign" / "sr.dcm", modality="SR", with_pixels=False)
    make_dicom(root / "foreign" / "rgb.dcm", samples=3, photometric="RGB",
               pixels=np.zeros((8, 8, 3), np.uint8), bits_stored=8)  # fmt: skip
    truncated = make_dicom(root / "broken" / "cut.dcm", body_part="LSPINE", view="LL")
    truncated.write_bytes(truncated.read_bytes()[:-500])
    (root / "broken" / "garbage.dcm").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    (root / "broken" / "empty.dcm").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    export = root / "exports" / "LWS"
    export.mkdir(parents=True)
    Image.fromarray(np.full((20, 10), 128, np.uint8)).save(export / "case3_seitlich.png")
    outside = tmp_path / "outside"
    make_dicom(outside / "other_patient.dcm", body_part="LSPINE", view="LL")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "2019" / "loop").symlink_to(root, target_is_directory=True)
    return root


def test_every_file_one_row_and_counts_add_up(tmp_path: Path):
    root = _mixed_archive(tmp_path)
    records = list(inventory(root, TriageRules()))
    files_found = sum(1 for p in root.rglob("*") if p.is_file() or p.is_symlink())
    assert len(records) == files_found == len({r.relpath for r in records})
    summary = summarise(records)
    assert summary.total == len(records)
    assert sum(summary.by_status.values()) == summary.total
    assert sum(summary.by_reason.values()) == summary.total

    by_path = {r.relpath: (r.status, r.reason) for r in records}
    assert by_path == {
        "2019/loop": (FileStatus.SKIPPED, Reason.SYMLINK_LOOP),
        "2019/patient1/ap.dcm": (FileStatus.SKIPPED, Reason.FRONTAL_VIEW),
        "2019/patient1/kw": (FileStatus.CANDIDATE, Reason.LATERAL_TL),
        "2019/patient1/lat.dcm": (FileStatus.CANDIDATE, Reason.LATERAL_TL),
        "2019/patient2/chest.dcm": (FileStatus.SKIPPED, Reason.OTHER_BODY_PART),
        "broken/cut.dcm": (FileStatus.UNREADABLE, Reason.BROKEN_PIXEL_DATA),
        "broken/empty.dcm": (FileStatus.SKIPPED, Reason.NOT_AN_IMAGE),
        "broken/garbage.dcm": (FileStatus.UNREADABLE, Reason.UNREADABLE_HEADER),
        "escape": (FileStatus.SKIPPED, Reason.SYMLINK_OUTSIDE),
        "exports/LWS/case3_seitlich.png": (FileStatus.CANDIDATE, Reason.LATERAL_TL),
        "foreign/ct.dcm": (FileStatus.SKIPPED, Reason.NOT_RADIOGRAPH),
        "foreign/rgb.dcm": (FileStatus.SKIPPED, Reason.COLOUR),
        "foreign/sr.dcm": (FileStatus.SKIPPED, Reason.NO_PIXEL_DATA),
        "notes.txt": (FileStatus.SKIPPED, Reason.NOT_AN_IMAGE),
    }
    candidate = next(r for r in records if r.relpath == "2019/patient1/lat.dcm")
    assert candidate.meta is not None and candidate.meta.view_position == "LL"


def test_skipped_files_are_never_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = _mixed_archive(tmp_path)
    decoded: list[str] = []

    def spy(path):
        decoded.append(Path(path).name)
        return read_radiograph(path)

    monkeypatch.setattr("auditor.archive.inventory.read_radiograph", spy)
    list(inventory(root, TriageRules()))
    assert decoded == []
    records = list(inventory(root, TriageRules(), verify_pixels=True))
    assert sorted(decoded) == ["case3_seitlich.png", "kw", "lat.dcm"]
    assert sum(r.status is FileStatus.CANDIDATE for r in records) == 3


def test_forced_candidates_that_fail_to_decode_become_unreadable(tmp_path: Path):
    root = _mixed_archive(tmp_path)
    listed = frozenset({"broken/cut.dcm", "foreign/ct.dcm", "2019/patient1/ap.dcm", "absent.dcm"})
    rules = TriageRules(files=listed)
    summary = write_accounting_csv(
        inventory(root, rules, verify_pixels=True), tmp_path / "acc.csv", rules
    )
    rows = {r["path"]: r for r in csv.DictReader((tmp_path / "acc.csv").open(encoding="utf-8"))}
    assert rows["foreign/ct.dcm"]["status"] == "candidate"
    assert rows["2019/patient1/ap.dcm"]["reason"] == "listed in the files list"
    assert rows["broken/cut.dcm"]["status"] == "unreadable"
    assert rows["2019/patient1/lat.dcm"]["reason"] == "not in the files list"
    assert summary.unmatched_listed == ("absent.dcm",)
    assert summary.by_status[FileStatus.CANDIDATE] == 2


def test_accounting_csv_round_trip(tmp_path: Path):
    root = _mixed_archive(tmp_path)
    out = tmp_path / "reports" / "accounting.csv"
    summary = write_accounting_csv(inventory(root), out)
    with out.open(encoding="utf-8", newline="") as fp:
        reader = csv.DictReader(fp)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == summary.total == 14
    counts = {s: sum(r["status"] == s.value for r in rows) for s in FileStatus}
    assert counts == dict(summary.by_status)
    chest = next(r for r in rows if r["path"] == "2019/patient2/chest.dcm")
    assert chest["series_description"].startswith("'=HYPERLINK")  # neutralised formula
    assert chest["modality"] == "DX" and chest["body_part"] == "CHEST"
    assert int(chest["size_bytes"]) == (root / "2019/patient2/chest.dcm").stat().st_size
    assert not list(out.parent.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_corrupted_real_files_never_crash_triage(tmp_path: Path):
    """Truncated and byte-damaged copies of real files give rows, never exceptions."""
    data_dir = DICOM_DATA
    rng = np.random.default_rng(7)
    root = tmp_path / "damaged"
    root.mkdir()
    sources = [data_dir / "dx_image.dcm", data_dir / "CR-MONO1-10-chest"]
    for i in range(60):
        data = bytearray(sources[i % 2].read_bytes())
        if i % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for j in rng.integers(0, 3000, size=int(rng.integers(1, 24))):
                data[int(j)] = int(rng.integers(0, 256))
        if i == 59:
            data[128:132] = b"\0\0\0\0"  # preamble left without its DICM magic
        (root / f"f{i:02d}.dcm").write_bytes(bytes(data))
    rules = TriageRules(include_all_radiographs=True, modalities=frozenset({"CR", "DX", ""}))
    records = list(inventory(root, rules, verify_pixels=True))
    assert len(records) == 60
    assert all(r.reason is not Reason.UNEXPECTED_ERROR for r in records), [
        r.detail for r in records if r.reason is Reason.UNEXPECTED_ERROR
    ]
    assert all(r.detail for r in records if r.status is not FileStatus.CANDIDATE)


def test_unexpected_errors_become_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = _mixed_archive(tmp_path)

    def broken(path):
        raise KeyError("a bug")

    monkeypatch.setattr("auditor.archive.inventory.read_header", broken)
    records = list(inventory(root))
    assert len(records) == 14
    assert any(r.reason is Reason.UNEXPECTED_ERROR and "a bug" in r.detail for r in records)


def _spine(rows: int = 300, cols: int = 200) -> np.ndarray:
    """A grey 'radiograph': a bright column with darker discs on a gradient."""
    grey = np.tile(np.linspace(20, 90, cols, dtype=np.float64), (rows, 1))
    grey[:, cols // 3 : cols // 2] = 200
    grey[::30, cols // 3 : cols // 2] = 120
    return grey.astype(np.uint8)


def _write_export(path: Path, kind: str) -> Path:
    grey = _spine()
    rgb = np.stack([grey] * 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rgb-png":
        Image.fromarray(rgb).save(path)
    elif kind == "rgba-png":
        Image.fromarray(np.dstack([rgb, np.full_like(grey, 255)])).save(path)
    elif kind == "palette-png":
        Image.fromarray(grey).convert("P").save(path)
    elif kind == "rgb-jpeg":
        Image.fromarray(rgb).save(path, quality=85)
    elif kind == "rgb-tiff":
        tifffile.imwrite(path, rgb, photometric="rgb")
    elif kind == "colour-png":
        colour = rgb.copy()
        colour[..., 0] = 255 - grey  # a photograph, a coloured chart: channels disagree
        Image.fromarray(colour).save(path)
    elif kind == "colour-palette-png":
        colour = rgb.copy()
        colour[..., 2] = 0
        Image.fromarray(colour).quantize(16).save(path)
    elif kind == "colour-jpeg":
        colour = rgb.copy()
        colour[..., 1] //= 3
        Image.fromarray(colour).save(path, quality=85)
    return path


@pytest.mark.parametrize(
    ("kind", "name", "status", "reason", "detail"),
    [
        ("rgb-png", "x.png", FileStatus.CANDIDATE, Reason.LATERAL_TL, "grey PNG stored as RGB"),
        ("rgba-png", "x.png", FileStatus.CANDIDATE, Reason.LATERAL_TL, "grey PNG stored as RGB"),
        ("palette-png", "x.png", FileStatus.CANDIDATE, Reason.LATERAL_TL, "grey PNG stored as P"),
        ("rgb-jpeg", "x.jpg", FileStatus.CANDIDATE, Reason.LATERAL_TL, "grey JPEG stored as RGB"),
        ("rgb-tiff", "x.tif", FileStatus.CANDIDATE, Reason.LATERAL_TL, "grey TIFF stored as RGB"),
        ("colour-png", "x.png", FileStatus.SKIPPED, Reason.COLOUR, "channels differ by"),
        ("colour-palette-png", "x.png", FileStatus.SKIPPED, Reason.COLOUR, "stored as P"),
        ("colour-jpeg", "x.jpg", FileStatus.SKIPPED, Reason.COLOUR, "grey up to 2"),
    ],
)
def test_colour_stored_exports_are_decided_on_their_pixels(
    tmp_path: Path, kind: str, name: str, status: FileStatus, reason: Reason, detail: str
) -> None:
    """Most web and PACS exports of a grey radiograph are RGB or palette files: the header says
    colour, the pixels say grey. Triage looks at the pixels, and the row says what it found."""
    root = tmp_path / "archive"
    _write_export(root / "LWS" / f"case_seitlich_{name}", kind)
    (record,) = inventory(root, TriageRules())
    assert (record.status, record.reason) == (status, reason), record.detail
    assert detail in record.detail
    assert record.meta is not None and record.meta.photometric != "MONOCHROME2"  # as stored
    listed = TriageRules(files=frozenset({record.relpath}))
    (forced,) = inventory(root, listed, verify_pixels=True)
    if status is FileStatus.CANDIDATE:  # what triage takes, the reader reads
        assert forced.reason is Reason.LISTED and detail in forced.detail
        assert read_radiograph(record.path).pixels.shape == _spine().shape
    else:  # --files does not make a colour image grey
        assert forced.reason is Reason.COLOUR


def test_a_colour_stored_export_that_cannot_be_decoded_is_unreadable(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    path = _write_export(root / "LWS" / "cut_seitlich.png", "rgb-png")
    path.write_bytes(path.read_bytes()[:200])  # the header is intact, the pixels are not
    (record,) = inventory(root, TriageRules())
    assert (record.status, record.reason) == (FileStatus.UNREADABLE, Reason.UNDECODABLE)
    assert "PNG pixels cannot be decoded" in record.detail


def test_triage_decodes_only_a_reduced_copy_of_a_colour_export(tmp_path: Path) -> None:
    from auditor.io.raster import GREY_CHECK_SIDE

    root = tmp_path / "archive"
    big = np.stack([np.tile(np.arange(3000, dtype=np.uint16) % 256, (2400, 1))] * 3, -1)
    path = root / "LWS" / "big_seitlich.jpg"
    path.parent.mkdir(parents=True)
    Image.fromarray(big.astype(np.uint8)).save(path, quality=90)
    seen: list[tuple[int, int]] = []
    original = Image.Image.convert

    def spy(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        seen.append(self.size)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image.Image, "convert", spy)
        (record,) = inventory(root, TriageRules())
    assert record.status is FileStatus.CANDIDATE, record.detail
    assert seen and max(max(size) for size in seen) <= 2 * GREY_CHECK_SIDE
