"""A header string with a control character was damaged (a wrong length swallowed the elements
after it): the value ends where the damage starts, so a patient's name and ID swallowed into a
series description never reach a report."""

from __future__ import annotations

from pathlib import Path

from auditor.io.dicom import read_dicom_header
from tests.helpers.dicom_files import make_dicom


def test_a_description_with_swallowed_elements_ends_at_the_damage(tmp_path: Path) -> None:
    swallowed = (
        "L-SPINE LAT \x10\x00\x10\x00PN\x0e\x00Fake^Patient1 \x10\x00 \x00LO\x08\x00FAKE-001"
    )
    path = make_dicom(tmp_path / "a.dcm", series_description=swallowed)
    meta = read_dicom_header(path)
    assert meta.series_description == "L-SPINE LAT"
    assert "FAKE" not in repr(meta) and "Patient1" not in repr(meta)


def test_text_with_an_escape_sequence_for_a_character_set_is_kept(tmp_path: Path) -> None:
    text = "\x1b$B;3ED\x1b(B LAT"  # ISO 2022 JIS: ESC is the one control character allowed
    path = make_dicom(tmp_path / "b.dcm", series_description=text)
    assert read_dicom_header(path).series_description.endswith("LAT")
