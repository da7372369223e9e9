"""Box files: row-level validation, COCO parity, and matching rows to archive images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.boxes import archive_key, read_box_file, resolve_boxes
from auditor.errors import InputFileError
from auditor.vocab import BoxFormat, Level

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


# -- the box files annotation tools write (auditor.box_formats) -----------------------------------

BOX = (10.0, 20.0, 110.0, 100.0)  # the box every layout below states, as tlaudit's corners


@pytest.mark.parametrize(
    "content",
    [
        "image,level,x_min,y_min,x_max,y_max\na.dcm,L1,10,20,110,100\n",
        "Image,Level,X Min,Y-Min,x max,Y_MAX\na.dcm,L1,10,20,110,100\n",  # spelt as people do
        "\ufeffimage,level,x_min,y_min,x_max,y_max\na.dcm,L1,10,20,110,100\n",  # Excel's BOM
        "image,level,xmin,ymin,xmax,ymax\na.dcm,L1,10,20,110,100\n",
        "image,label,xtl,ytl,xbr,ybr\na.dcm,L1,10,20,110,100\n",  # CVAT: the label is the level
        "file_name,vertebra,x1,y1,x2,y2\na.dcm,L1,10,20,110,100\n",
        "image,level,x,y,w,h\na.dcm,L1,10,20,100,80\n",  # top-left corner and size, pixels
        "image,level,x,y,width,height\na.dcm,L1,10,20,100,80\n",
        # Label Studio: percent of the original size, its local-files URL, its label list
        "image,rectanglelabels,x,y,width,height,original_width,original_height\n"
        '/data/local-files/?d=a.dcm,"[""L1""]",1,2,10,8,1000,1000\n',
        "image;level;x_min;y_min;x_max;y_max\na.dcm;L1;10,0;20;110,0;100\n",  # decimal commas
        "image\tlevel\tx_min\ty_min\tx_max\ty_max\na.dcm\tL1\t10\t20\t110\t100\n",
        "image|level|xtl|ytl|xbr|ybr\na.dcm|L1|10|20|110|100\n",
    ],
    ids=[
        "tlaudit", "spelling", "bom", "xmin", "cvat", "x1y1", "xywh", "xy-width", "label-studio",
        "semicolon", "tab", "pipe",
    ],
)  # fmt: skip
def test_every_layout_gives_the_same_box(tmp_path: Path, content: str) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text(content, encoding="utf-8")
    result = read_box_file(path)
    assert result.errors == ()
    (box,) = result.rows
    assert (box.image, box.level) == ("a.dcm", Level.L1)
    assert box.xyxy == pytest.approx(BOX)
    assert result.notes, "the box file says how it was read"


def test_box_format_reads_a_file_whose_columns_allow_two_layouts(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text(
        "image,level,x_min,y_min,x_max,y_max,x,y,width,height\na.dcm,L1,10,20,110,100,1,2,10,8\n",
        encoding="utf-8",
    )
    with pytest.raises(InputFileError, match="--box-format corners, xywh or percent"):
        read_box_file(path)
    assert read_box_file(path, "corners").rows[0].xyxy == BOX
    assert read_box_file(path, BoxFormat.XYWH).rows[0].xyxy == (1.0, 2.0, 11.0, 10.0)


@pytest.mark.parametrize(
    ("content", "name", "box_format", "match"),
    [
        ("image,level,x_min,y_min,x_max,y_max\n", "boxes.csv", "auto", "has no rows"),
        ("image,level,x_min,y_min,x_max,y_max\n\n\n", "boxes.csv", "auto", "has no rows"),
        ("", "boxes.csv", "auto", "is empty"),
        ("\n \n", "boxes.csv", "auto", "is empty"),
        ('{"images": [], "annotations": []}', "boxes.json", "auto", "has no rows"),
        ("image,level,x,y,w,h\na.dcm,L1,1,2,3,4\n", "boxes.csv", "percent", "original_width"),
        ("image,level,x,y,w,h\na.dcm,L1,1,2,3,4\n", "boxes.csv", "corners", "x_min, y_min"),
        ("image,level,x_min,y_min,x_max,y_max\n", "boxes.csv", "xywh", "x, y, w, h"),
        ("image,level,top,left\na.dcm,L1,1,2\n", "boxes.csv", "auto", "Label Studio's x, y"),
        ('{"annotations": []}', "boxes.json", "percent", "applies to CSV files"),
        ("[" * 100_000 + "]" * 100_000, "boxes.json", "auto", "nested too deeply"),
        ('{"annotations": ' + "[" * 100_000 + "]" * 100_000 + "}", "boxes.json", "auto",
         "nested too deeply"),
        ('[{"data": {"image": "a.png"}, "annotations": []}]', "boxes.json", "auto",
         "Label Studio JSON export"),
        ('{"images": 5, "annotations": []}', "boxes.json", "auto", "'images' is int"),
        ('{"categories": {}, "annotations": []}', "boxes.json", "auto", "'categories' is dict"),
        ("{\"annotations\": [" + "9" * 5000 + "]}", "boxes.json", "auto", "not valid JSON"),
    ],
    ids=[
        "header-only", "header-blank-lines", "empty", "whitespace", "coco-no-annotations",
        "percent-without-size", "corners-asked", "xywh-asked", "no-box-columns",
        "coco-percent", "nested-list", "nested-annotations", "label-studio-json",
        "coco-images-not-a-list", "coco-categories-not-a-list", "coco-5000-digits",
    ],
)  # fmt: skip
def test_box_files_that_cannot_be_read_are_refused_cleanly(
    tmp_path: Path, content: str, name: str, box_format: str, match: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=match):
        read_box_file(path, box_format)


def test_a_box_file_in_another_encoding_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "boxes.csv"
    path.write_bytes(
        "image;level;x_min;y_min;x_max;y_max\nWirbelsäule.dcm;L1;1;2;30;40\n".encode("cp1252")
    )
    with pytest.raises(InputFileError, match="not UTF-8 text; save it as CSV UTF-8"):
        read_box_file(path)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("a.dcm,L1,150,2,10,8,1000,1000", "x 150 is not a percentage"),
        ("a.dcm,L1,1,2,-5,8,1000,1000", "width -5 is not a percentage"),
        ("a.dcm,L1,1,2,10,8,0,1000", "original size 0 x 1000 is not an image size"),
        ("a.dcm,L1,1,2,10,8,,1000", "original_width is not a number"),
        ("a.dcm,L1,one,2,10,8,1000,1000", "x is not a number: 'one'"),
        ("a.dcm,L1,1,2,10,inf,1000,1000", "height is not a finite number"),
    ],
)
def test_percent_rows_that_cannot_be_converted_are_named_errors(
    tmp_path: Path, row: str, match: str
) -> None:
    path = tmp_path / "boxes.csv"
    path.write_text(
        "image,level,x,y,width,height,original_width,original_height\n"
        f"a.dcm,L2,1,2,10,8,1000,1000\n{row}\n",
        encoding="utf-8",
    )
    result = read_box_file(path)
    assert [box.level for box in result.rows] == [Level.L2]
    (error,) = result.errors
    assert error.row == 2 and error.image == "a.dcm" and match in error.reason


def test_coco_with_the_level_as_an_attribute(tmp_path: Path) -> None:
    """CVAT exports one category, ``vertebra``, and the level as an attribute of each box."""
    coco = {
        "images": [{"id": 1, "file_name": "p/a.png"}],
        "categories": [{"id": 3, "name": "vertebra"}, {"id": 4, "name": "L5"}],
        "annotations": [
            {"image_id": 1, "category_id": 3, "bbox": [10, 20, 100, 80],
             "attributes": {"Level": "L1", "Fracture": "yes", "occluded": False}},
            {"image_id": 1, "category_id": 3, "bbox": [10, 120, 100, 80],
             "attributes": {"vertebra": "l-2"}},
            {"image_id": 1, "category_id": 4, "bbox": [10, 220, 100, 80],
             "attributes": {"level": "L4"}},  # a category naming a level wins
            {"image_id": 1, "category_id": 3, "bbox": [10, 320, 100, 80]},
        ],
    }  # fmt: skip
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    result = read_box_file(path)
    assert [(b.level, b.xyxy[1]) for b in result.rows] == [
        (Level.L1, 20.0),
        (Level.L2, 120.0),
        (Level.L5, 220.0),
    ]
    (error,) = result.errors
    assert error.row == 4 and "unknown vertebral level 'vertebra'" in error.reason


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        ({"image_id": [1], "category_id": 1, "bbox": [1, 2, 30, 40]}, "is not in 'images'"),
        ({"image_id": {"a": 1}, "category_id": 1, "bbox": [1, 2, 30, 40]}, "is not in 'images'"),
        ({"image_id": True, "category_id": 1, "bbox": [1, 2, 30, 40]}, "is not in 'images'"),
        ({"image_id": 1, "category_id": [1], "bbox": [1, 2, 30, 40]}, "unknown vertebral level"),
        ({"image_id": 1, "category_id": 1, "bbox": "1,2,30,40"}, "bbox must be"),
        ({"image_id": 1, "category_id": 1, "bbox": [[1], 2, 30, 40]}, "bbox is not a number"),
        ({"image_id": 1, "category_id": 1, "bbox": [True, 2, 30, 40]}, "bbox is not a number"),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 1e309]}, "not a finite number"),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40], "attributes": [1]},
         "attributes must be an object"),
        ("annotation", "not an object"),
        (None, "not an object"),
    ],
)  # fmt: skip
def test_hostile_coco_annotations_are_row_errors(
    tmp_path: Path, annotation: object, match: str
) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "a.png"}, {"id": [2]}, "not an image", {"id": None}],
        "categories": [{"id": 1, "name": "L1"}, {"id": {}, "name": "L2"}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40]}, annotation],
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    result = read_box_file(path)
    assert len(result.rows) == 1
    (error,) = result.errors
    assert error.row == 2 and match in error.reason


def test_rows_whose_path_names_no_image_are_matched_by_uid_or_by_the_end_of_their_path(
    tmp_path: Path,
) -> None:
    """A box file written relative to the archive's parent folder (``archive/...``), or with
    absolute paths, still finds its images; so does a row whose UID names one."""
    path = write_csv(
        tmp_path,
        "\n".join(
            [
                "archive/p/a.dcm,,L1,0,300,100,400,,,",  # relative to the parent folder
                "/data/er/archive/p/a.dcm,,L2,0,400,100,500,,,",  # absolute
                "C:\\exports\\archive\\p\\a.dcm,,L3,0,500,100,600,,,",  # Windows, absolute
                "elsewhere/b.dcm,uid-b,L1,0,300,100,400,,,",  # the UID names an image
                "../b.dcm,uid-b,L2,0,400,100,500,,,",  # outside, but the UID names an image
                "archive/p/../../../etc/a.dcm,,L4,0,0,100,100,,,",  # climbs: never matched
                "archive/p/zzz.dcm,,L4,0,0,100,100,,,",  # no tail is an image
            ]
        )
        + "\n",
    )
    images = {"p/a.dcm": FakeImage("uid-a"), "q/b.dcm": FakeImage("uid-b")}
    resolved = resolve_boxes(read_box_file(path).rows, images)
    assert [b.level for b in resolved.by_image["p/a.dcm"]] == [Level.L1, Level.L2, Level.L3]
    assert {b.image for b in resolved.by_image["p/a.dcm"]} == {"p/a.dcm"}
    assert [b.level for b in resolved.by_image["q/b.dcm"]] == [Level.L1, Level.L2]
    assert [(e.row, e.reason.split(" ")[0]) for e in resolved.errors] == [
        (6, "image"),
        (7, "image"),
    ]
    assert "points outside the archive" in resolved.errors[0].reason
    assert "2 box rows matched their image by SOP Instance UID" in resolved.notes[0]
    assert "3 box rows matched their image only without the leading folders" in resolved.notes[1]


@pytest.mark.parametrize(
    ("size", "boxes", "refused"),
    [
        ((2000, 2500), [(10, 20, 30, 28), (10, 30, 30, 38)], True),  # percent read as pixels
        ((600, 500), [(10, 20, 30, 28), (10, 30, 30, 38)], True),
        ((2000, 2500), [(10, 20, 30, 28), (10, 30, 300, 380)], False),  # one box beyond 100
        ((2000, 2500), [(10, 20, 30, 28)], False),  # one box says too little
        ((160, 96), [(10, 20, 30, 28), (10, 30, 30, 38)], False),  # a small image
    ],
)
def test_boxes_that_cannot_be_pixels_are_refused(
    tmp_path: Path, size: tuple[int, int], boxes: list[tuple[int, ...]], refused: bool
) -> None:
    levels = ("L1", "L2")
    body = "".join(
        f"a.dcm,,{lv},{','.join(map(str, b))},,,\n" for lv, b in zip(levels, boxes, strict=False)
    )
    resolved = resolve_boxes(
        read_box_file(write_csv(tmp_path, body)).rows,
        {"a.dcm": FakeImage("uid-a", rows=size[1], columns=size[0])},
    )
    if refused:
        assert resolved.by_image == {}
        assert len(resolved.errors) == len(boxes)
        assert all("percent coordinates, not pixels" in e.reason for e in resolved.errors)
    else:
        assert resolved.n_boxes == len(boxes) and resolved.errors == ()


def test_label_studio_percent_boxes_become_pixels_of_the_image(tmp_path: Path) -> None:
    """The file that was read as pixels before (8 likely misses where the truth was 4): now
    converted, so its boxes land where the vertebrae are and are not refused."""
    path = tmp_path / "boxes.csv"
    path.write_text(
        "image,rectanglelabels,x,y,width,height,original_width,original_height\n"
        "a.dcm,L1,40,30,20,8,2000,2500\na.dcm,L2,40,40,20,8,2000,2500\n",
        encoding="utf-8",
    )
    box_file = read_box_file(path)
    assert "Label Studio percent" in box_file.notes[0]
    resolved = resolve_boxes(box_file.rows, {"a.dcm": FakeImage("u", rows=2500, columns=2000)})
    assert [b.xyxy for b in resolved.by_image["a.dcm"]] == [
        pytest.approx((800, 750, 1200, 950)),
        pytest.approx((800, 1000, 1200, 1200)),
    ]
