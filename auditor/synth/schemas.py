"""The tables of a synthetic archive: their columns, and the rows a study or a file gives them.

``boxes`` (what a scan gets: no labels), ``ground_truth`` (the same boxes with label, AO type,
Genant grade, height ratios, fracture zone, partial flag, variants), ``reads`` (with a free-text
report), ``read_truth`` (what each report says per level), ``studies`` and ``manifest`` are CSV
tables with the columns below; the boxes are also kept as COCO annotations,
plain and with the truth as attributes. Values are strings as written; numbers keep two decimals
(coordinates) or four (ratios), lists join with ``;``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from auditor.synth.anatomy import BOXED_LEVELS
from auditor.synth.instances import Instance
from auditor.synth.study import SynthStudy

BOX_COLUMNS = (
    "image",
    "sop_instance_uid",
    "level",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "patient_id",
    "study_uid",
)
TRUTH_COLUMNS = (
    "image",
    "sop_instance_uid",
    "level",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "label",
    "ao_type",
    "genant_grade",
    "height_ratio_anterior",
    "height_ratio_middle",
    "fracture_zone",
    "patient_id",
    "study_uid",
    "accession_number",
    "partial",
    "height_loss",
    "variants",
)
READ_COLUMNS = (
    "accession_number",
    "study_uid",
    "image",
    "fracture_reported",
    "reported_levels",
    "impression",
    "report",
)
#: What each report of reads.csv says per level (auditor.synth.reports): one row per level it
#: names, ``*`` for a study-wide statement.
READ_TRUTH_COLUMNS = ("study_uid", "accession_number", "language", "level", "mention")
STUDY_COLUMNS = (
    "study_uid",
    "accession_number",
    "patient_id",
    "image",
    "field",
    "n_boxes",
    "fractured_levels",
    "ao_types",
    "read_present",
    "fracture_reported",
    "reported_levels",
    "planted_miss_levels",
    "overcalled_levels",
)
MANIFEST_COLUMNS = (
    "file",
    "kind",
    "expected_triage",
    "modality",
    "transfer_syntax",
    "study_uid",
    "bytes",
)


@dataclass
class Tables:
    """Rows of every table, gathered study by study and file by file.

    ``coco_boxes`` holds, per box row (same order as ``boxes``), the index of its image in its own
    study's tables, its plain COCO annotation and the one with truth; merged tables match boxes to
    images by file name instead (:func:`auditor.synth.writers.write_coco`).
    """

    boxes: list[dict[str, str]] = field(default_factory=list)
    truth: list[dict[str, str]] = field(default_factory=list)
    reads: list[dict[str, str]] = field(default_factory=list)
    read_truth: list[dict[str, str]] = field(default_factory=list)
    studies: list[dict[str, str]] = field(default_factory=list)
    manifest: list[dict[str, str]] = field(default_factory=list)
    coco_images: list[dict[str, object]] = field(default_factory=list)
    coco_boxes: list[tuple[int, dict[str, object], dict[str, object]]] = field(default_factory=list)

    def extend(self, other: Tables) -> None:
        """Append ``other``'s rows to this object's, table by table."""
        self.boxes.extend(other.boxes)
        self.truth.extend(other.truth)
        self.reads.extend(other.reads)
        self.read_truth.extend(other.read_truth)
        self.studies.extend(other.studies)
        self.manifest.extend(other.manifest)
        self.coco_images.extend(other.coco_images)
        self.coco_boxes.extend(other.coco_boxes)


def study_tables(study: SynthStudy, rel: str) -> Tables:
    """The boxes, truth, read and study rows of a lateral study whose image is at ``rel``."""
    h = study.header
    tables = Tables()
    rows, cols = study.stored.shape
    tables.coco_images.append(
        {"file_name": rel, "width": cols, "height": rows, "sop_instance_uid": h.sop_uid}
    )
    for v in study.vertebrae:
        x0, y0, x1, y1 = v.box
        base = {
            "image": rel,
            "sop_instance_uid": h.sop_uid,
            "level": v.level,
            "x_min": f"{x0:.2f}",
            "y_min": f"{y0:.2f}",
            "x_max": f"{x1:.2f}",
            "y_max": f"{y1:.2f}",
            "patient_id": h.patient_id,
            "study_uid": h.study_uid,
        }
        tables.boxes.append(dict(base))
        truth = dict(base)
        truth.update(
            {
                "label": "fracture" if v.label else "no_fracture",
                "ao_type": v.ao_type,
                "genant_grade": str(v.genant_grade),
                "height_ratio_anterior": f"{v.height_ratio_anterior:.4f}",
                "height_ratio_middle": f"{v.height_ratio_middle:.4f}",
                "fracture_zone": json.dumps([[round(x, 2), round(y, 2)] for x, y in v.zone])
                if v.zone
                else "",
                "accession_number": h.accession_number,
                "partial": "yes" if v.partial else "no",
                "height_loss": f"{v.height_loss:.4f}",
                "variants": ";".join(v.variants),
            }
        )
        tables.truth.append(truth)
        bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
        plain: dict[str, object] = {
            "category_id": BOXED_LEVELS.index(v.level) + 1,
            "bbox": bbox,
            "area": round(bbox[2] * bbox[3], 2),
            "iscrowd": 0,
            "attributes": {"patient_id": h.patient_id, "study_uid": h.study_uid},
        }
        full: dict[str, object] = dict(plain)
        full["attributes"] = {
            "label": "fracture" if v.label else "no_fracture",
            "ao_type": v.ao_type,
            "genant_grade": v.genant_grade,
            "patient_id": h.patient_id,
            "study_uid": h.study_uid,
            "accession_number": h.accession_number,
            "partial": v.partial,
            "height_ratio_anterior": v.height_ratio_anterior,
            "height_ratio_middle": v.height_ratio_middle,
            "height_loss": v.height_loss,
            "variants": list(v.variants),
        }
        if v.zone:
            full["segmentation"] = [[c for point in v.zone for c in point]]
        tables.coco_boxes.append((len(tables.coco_images) - 1, plain, full))

    r = study.read
    if r.present:
        tables.reads.append(
            {
                "accession_number": h.accession_number,
                "study_uid": h.study_uid,
                "image": rel,
                "fracture_reported": "yes" if r.fracture_reported else "no",
                "reported_levels": ";".join(r.reported_levels),
                "impression": r.impression,
                "report": r.report,
            }
        )
        tables.read_truth.extend(
            {
                "study_uid": h.study_uid,
                "accession_number": h.accession_number,
                "language": r.report_language,
                "level": level,
                "mention": mention,
            }
            for level, mention in r.report_truth
        )
    tables.studies.append(
        {
            "study_uid": h.study_uid,
            "accession_number": h.accession_number,
            "patient_id": h.patient_id,
            "image": rel,
            "field": study.scene.field.kind,
            "n_boxes": str(len(study.vertebrae)),
            "fractured_levels": ";".join(study.fractured_levels),
            "ao_types": ";".join(v.ao_type for v in study.vertebrae if v.label),
            "read_present": "yes" if r.present else "no",
            "fracture_reported": ("yes" if r.fracture_reported else "no") if r.present else "",
            "reported_levels": ";".join(r.reported_levels) if r.present else "",
            "planted_miss_levels": ";".join(r.planted_miss_levels),
            "overcalled_levels": ";".join(r.overcalled_levels),
        }
    )
    return tables


def manifest_row(instance: Instance, size: int) -> dict[str, str]:
    """The manifest row of a file written as ``size`` bytes."""
    return {
        "file": instance.rel,
        "kind": instance.kind,
        "expected_triage": instance.expected,
        "modality": instance.modality,
        "transfer_syntax": instance.transfer_syntax,
        "study_uid": instance.study_uid,
        "bytes": str(size),
    }
