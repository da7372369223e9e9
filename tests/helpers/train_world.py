"""A tiny labelled world for train/evaluate tests: PNG 'radiographs' with box-shaped vertebrae.

Each study is one PNG holding a column of bright rectangles (vertebral bodies) on a dark,
noisy background. A fractured vertebra loses a wedge at its anterior-superior corner (the
fracture zone, recorded as a polygon like the synthetic world's ground truth). Patients may have
two studies, so patient grouping matters.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

LEVELS = ("T11", "T12", "L1", "L2")
FIELDS = (
    "image",
    "level",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "label",
    "ao_type",
    "genant_grade",
    "patient_id",
    "study_uid",
    "fracture_zone",
)


def make_world(root: Path, n_studies: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/archive/*.png`` and ``root/annotations.csv``; return (archive, annotations)."""
    rng = np.random.default_rng(seed)
    archive = root / "archive"
    (archive / "studies").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_studies):
        patient = f"P{s // 2:03d}"  # two studies per patient
        img = rng.normal(0.15, 0.03, (240, 120)).clip(0, 1)
        name = f"studies/s{s:03d}.png"
        for i, level in enumerate(LEVELS):
            x0, y0, w, h = 30 + int(rng.integers(-4, 5)), 20 + 55 * i, 60, 40
            img[y0 : y0 + h, x0 : x0 + w] = 0.8
            fracture = bool(rng.random() < 0.4)
            zone = ""
            if fracture:
                d = 22
                yy, xx = np.mgrid[0:d, 0:d]
                wedge = xx + yy < d
                img[y0 : y0 + d, x0 : x0 + d][wedge] = 0.15
                zone = json.dumps([[x0, y0], [x0 + d, y0], [x0, y0 + d]])
            rows.append(
                {
                    "image": name,
                    "level": level,
                    "x_min": x0,
                    "y_min": y0,
                    "x_max": x0 + w,
                    "y_max": y0 + h,
                    "label": "fracture" if fracture else "no_fracture",
                    "ao_type": "A1" if fracture else "",
                    "genant_grade": 2 if fracture else 0,
                    "patient_id": patient,
                    "study_uid": f"1.2.3.{s}",
                    "fracture_zone": zone,
                }
            )
        noisy = (img + rng.normal(0, 0.02, img.shape)).clip(0, 1)
        Image.fromarray((noisy * 65535).astype(np.uint16)).save(archive / name)
    annotations = root / "annotations.csv"
    with annotations.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return archive, annotations
