"""``findings.csv``: one row per vertebra box, for other tools.

Columns: ``study, image, level, probability, call, threshold, study_status, reported_in_read,
reference_label, box_row, x_min, y_min, x_max, y_max, box_source, box_confidence, heatmap, error``.
Rows are in a fixed order (study, image, level) and hold no timestamps, so an interrupted and
resumed run writes the same file as an uninterrupted one. Text that a spreadsheet would read as a
formula is prefixed with an apostrophe (:func:`auditor.reports.cells.csv_safe`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from auditor.files import csv_safe, write_text_atomic
from auditor.records import AuditReport

FINDINGS_COLUMNS = (
    "study",
    "image",
    "level",
    "probability",
    "call",
    "threshold",
    "study_status",
    "reported_in_read",
    "reference_label",
    "box_row",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "box_source",
    "box_confidence",
    "heatmap",
    "error",
    "domain_distance",
    "out_of_distribution",
)


def write_findings_csv(report: AuditReport, target: Path) -> None:
    """Write ``findings.csv`` atomically (UTF-8, header row, ``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FINDINGS_COLUMNS)
    for v in report.vertebrae:
        writer.writerow(
            [
                csv_safe(v.study),
                csv_safe(v.image),
                v.level.value,
                "" if v.probability is None else f"{v.probability:.6f}",
                "" if v.probability is None else ("positive" if v.positive else "negative"),
                f"{report.threshold:.6f}",
                v.study_status.value,
                {None: "", True: "yes", False: "no"}[v.reported],
                {None: "", 1: "fracture", 0: "no_fracture"}.get(v.reference_label, ""),
                v.box_row,
                *(f"{c:.2f}" for c in v.box),
                v.box_source,
                "" if v.box_confidence is None else f"{v.box_confidence:.4f}",
                v.heatmap,
                csv_safe(v.error),
                "" if v.distance is None else f"{v.distance:.4f}",
                "yes" if v.out_of_distribution else "",
            ]
        )
    write_text_atomic(target, buffer.getvalue())
