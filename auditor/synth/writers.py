"""Writing a synthetic archive's files: each instance, the CSV tables and the COCO box files.

CSV files are UTF-8 with ``\\n`` line ends and exactly the columns of
:mod:`auditor.synth.schemas`; the JSON files are indented by one space. Nothing written depends
on the clock or the number of worker processes, so a world is byte-identical from run to run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from auditor.synth import dicom
from auditor.synth.anatomy import BOXED_LEVELS
from auditor.synth.instances import Instance
from auditor.synth.schemas import (
    BOX_COLUMNS,
    MANIFEST_COLUMNS,
    READ_COLUMNS,
    READ_TRUTH_COLUMNS,
    STUDY_COLUMNS,
    TRUTH_COLUMNS,
    Tables,
)


def write_instance(instance: Instance, root: Path) -> int:
    """Write ``instance`` under the archive folder ``root``; returns its size in bytes."""
    path = root / instance.rel
    if instance.dataset is not None:
        return dicom.write(instance.dataset, path)
    assert instance.data is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(instance.data)
    return len(instance.data)


def write_tables(out: Path, tables: Tables) -> None:
    """Write the six CSV tables (the manifest sorted by file) and the two COCO files in ``out``."""
    write_csv(out / "boxes.csv", BOX_COLUMNS, tables.boxes)
    write_csv(out / "ground_truth.csv", TRUTH_COLUMNS, tables.truth)
    write_csv(out / "reads.csv", READ_COLUMNS, tables.reads)
    write_csv(out / "reads_truth.csv", READ_TRUTH_COLUMNS, tables.read_truth)
    write_csv(out / "studies.csv", STUDY_COLUMNS, tables.studies)
    write_csv(
        out / "manifest.csv", MANIFEST_COLUMNS, sorted(tables.manifest, key=lambda r: r["file"])
    )
    write_coco(out / "boxes.json", tables, with_truth=False)
    write_coco(out / "ground_truth.json", tables, with_truth=True)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write ``rows`` with exactly ``columns`` (a missing value is written empty)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def write_coco(path: Path, tables: Tables, with_truth: bool) -> None:
    """Write the boxes as a COCO file, with the truth as attributes when ``with_truth``."""
    images = []
    for i, entry in enumerate(tables.coco_images):
        images.append({"id": i + 1, **entry})
    # coco_boxes hold indices local to each task; rebuild global image ids by file name order.
    annotations = []
    index_of = {str(e["file_name"]): i + 1 for i, e in enumerate(tables.coco_images)}
    file_of_box = [row["image"] for row in tables.boxes]
    for k, ((_, plain, full), file_name) in enumerate(
        zip(tables.coco_boxes, file_of_box, strict=True)
    ):
        ann = dict(full if with_truth else plain)
        annotations.append({"id": k + 1, "image_id": index_of[file_name], **ann})
    doc = {
        "info": {"description": "tlaudit synthetic lateral thoracolumbar world", "version": "1"},
        "images": images,
        "categories": [{"id": i + 1, "name": level} for i, level in enumerate(BOXED_LEVELS)],
        "annotations": annotations,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
