"""Box files: row-level validation, COCO parity, and matching rows to archive images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.boxes import archive_key, read_box_file, resolve_boxes
from auditor.errors import InputFileError
from auditor.vocab import Level

HEADER = "image,sop_instance_uid,level,x_min,y_min,x_max,y_max,label,ao_type,genant_grade\n"


@dataclass(frozen=True)
class FakeImage:
    sop_uid: str
    rows: int = 1000
    columns: int = 800


def write_csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "boxes.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_valid_rows_are_parsed_with_labels(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "p/s/a.dcm,1.2.3,l1,10,20,110,100,fracture,a1,2\np/s/a.dcm,1.2.3,T12,10,120,110,200,0,,\n",
    )
    result = read_box_file(path)
    assert result.errors == ()
    first, second = result.rows
    assert (first.level, first.label, first.ao_type, first.genant_grade) == (Level.L1, 1, "A1", 2)
    assert first.xyxy == (10.0, 20.0, 110.0, 100.0)
    assert (second.level, second.label, second.genant_grade) == (Level.T12, 0, None)
    assert first.row == 1 and second.row == 2


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("a.dcm,,L7,0,0,50,50,,,", "unknown vertebral level 'L7'"),
        ("a.dcm,,L1,50,0,50,50,,,", "degenerate box"),
        ("a.dcm,,L1,0,0,2,50,,,", "degenerate box"),
        ("a.dcm,,L1,zero,0,50,50,,,", "x_min is not a number"),
        ("a.dcm,,L1,0,0,nan,50,,,", "not a finite number"),
        (",,L1,0,0,50,50,,,", "neither image nor sop_instance_uid"),
        ("a.dcm,,L1,0,0,50,50,maybe,,", "label 'maybe'"),
        ("a.dcm,,L1,0,0,50,50,1,,5", "genant_grade '5' is not in 0 to 3"),
        ("a.dcm,,L1,0,0,50,50,,,,robot,", "source 'robot'"),
        ("a.dcm,,L1,0,0,50,50,,,,localizer,1.5", "confidence '1.5' is not in 0 to 1"),
    ],
)
def test_bad_rows_become_named_errors(tmp_path: Path, row: str, match: str) -> None:
    header = HEADER.rstrip("\n") + ",source,confidence\n"
    path = write_csv(tmp_path, "good.dcm,,L2,0,0,50,50,,,,,\n" + row + "\n", header)
    result = read_box_file(path)
    assert len(result.rows) == 1
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.row == 2
    assert match in error.reason
    assert str(error).startswith("row 2")


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        ("image,level,x_min\n", "boxes.csv", "missing column"),
        ("level,x_min,y_min,x_max,y_max\n", "boxes.csv", "image or sop_instance_uid"),
        ("{not json", "boxes.json", "not valid JSON"),
        ('{"images": []}', "boxes.json", "not a COCO file"),
        ("x", "boxes.txt", "expected a .csv or COCO .json"),
    ],
)
def test_unreadable_files_raise(tmp_path: Path, content: str, name: str, match: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=match):
        read_box_file(path)


def test_localizer_columns_are_kept(tmp_path: Path) -> None:
    header = HEADER.rstrip("\n") + ",source,confidence\n"
    path = write_csv(tmp_path, "a.dcm,,L1,0,0,50,50,,,,localizer,0.875\n", header)
    (box,) = read_box_file(path).rows
    assert (box.source, box.confidence) == ("localizer", 0.875)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_box_file(tmp_path / "nope.csv")


def test_coco_matches_csv(tmp_path: Path) -> None:
    coco = {
        "images": [{"id": 7, "file_name": "p/s/a.dcm", "width": 800, "height": 1000}],
        "categories": [{"id": 1, "name": "L1"}, {"id": 2, "name": "X9"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 1,
                "bbox": [10, 20, 100, 80],
                "attributes": {"label": "fracture", "ao_type": "A3", "genant_grade": 3},
            },
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [10, 20, 100, 80]},
            {"id": 3, "image_id": 99, "category_id": 1, "bbox": [10, 20, 100, 80]},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [10, 20]},
        ],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    result = read_box_file(path)
    (box,) = result.rows
    assert box.xyxy == (10.0, 20.0, 110.0, 100.0)
    assert (box.image, box.level, box.label, box.ao_type, box.genant_grade) == (
        "p/s/a.dcm",
        Level.L1,
        1,
        "A3",
        3,
    )
    reasons = [error.reason for error in result.errors]
    assert [error.row for error in result.errors] == [2, 3, 4]
    assert "unknown vertebral level" in reasons[0]
    assert "image_id 99" in reasons[1]
    assert "bbox must be" in reasons[2]


@pytest.mark.parametrize(
    ("image", "key"),
    [
        ("p/s/a.dcm", "p/s/a.dcm"),
        ("./p//s/a.dcm", "p/s/a.dcm"),
        ("p\\s\\a.dcm", "p/s/a.dcm"),
        ("p/x/../s/a.dcm", "p/s/a.dcm"),
        ("../outside.dcm", None),
        ("p/../../outside.dcm", None),
        ("/etc/passwd", None),
        ("C:/Windows/x.dcm", None),
    ],
)
def test_archive_key_never_escapes(image: str, key: str | None) -> None:
    assert archive_key(image) == key


def test_resolve_checks_rows_against_images(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "\n".join(
            [
                "a.dcm,,L2,0,400,100,500,,,",  # ok
                "a.dcm,,L1,0,300,100,400,,,",  # ok, sorts before L2
                ",uid-b,T12,0,0,100,100,,,",  # ok, by SOP Instance UID
                "../etc/a.dcm,,L3,0,0,100,100,,,",  # escapes the archive
                "missing.dcm,,L3,0,0,100,100,,,",  # unknown image
                ",uid-zzz,L3,0,0,100,100,,,",  # unknown UID
                "a.dcm,,L4,700,900,900,1100,,,",  # outside the 800 x 1000 image
                "a.dcm,,L1,0,0,100,100,,,",  # duplicate level
            ]
        )
        + "\n",
    )
    images = {"a.dcm": FakeImage("uid-a"), "dir/b.dcm": FakeImage("uid-b")}
    resolved = resolve_boxes(read_box_file(path).rows, images)
    assert [b.level for b in resolved.by_image["a.dcm"]] == [Level.L1, Level.L2]
    assert [b.image for b in resolved.by_image["dir/b.dcm"]] == ["dir/b.dcm"]
    assert resolved.n_boxes == 3
    reasons = {error.row: error.reason for error in resolved.errors}
    assert set(reasons) == {4, 5, 6, 7, 8}
    assert "outside the archive" in reasons[4]
    assert "not a candidate image" in reasons[5]
    assert "matches no candidate image" in reasons[6]
    assert "outside the 800 x 1000 image" in reasons[7]
    assert "given twice" in reasons[8]
