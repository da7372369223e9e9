"""Writing a whole synthetic world: the PACS-like archive and its box, truth and reads files.

Layout of ``OUT``::

    archive/<PatientID>/<AccessionNumber>/<SeriesNumber>_<Modality>/<SOPInstanceUID>.dcm
    boxes.csv, boxes.json            a box per visible vertebral body, no labels (what a scan gets)
    ground_truth.csv, ground_truth.json   the same boxes with label, AO type, Genant grade, ratios,
                                     fracture zone, partial flag, variants
    reads.csv                        the original read per lateral study (some studies have none)
    studies.csv                      per lateral study: fractured, reported, planted-miss levels
    manifest.csv                     every file in the archive with its kind and expected triage
    contact_sheet.png                with --preview

Image paths in the tables are relative to ``OUT/archive`` with POSIX separators.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from auditor.errors import UsageError
from auditor.synth import dicom
from auditor.synth.anatomy import BOXED_LEVELS
from auditor.synth.config import SynthConfig
from auditor.synth.distractors import (
    NON_DICOM_TEXT,
    ct_distractor,
    mr_distractor,
    radiograph_distractor,
    sr_distractor,
)
from auditor.synth.preview import contact_sheet, save_sheet, study_tile
from auditor.synth.study import SynthStudy, fake_date, generate_study, stream_rng, uid

logger = logging.getLogger(__name__)

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
)
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
OUTPUT_FILES = (
    "boxes.csv",
    "boxes.json",
    "ground_truth.csv",
    "ground_truth.json",
    "reads.csv",
    "studies.csv",
    "manifest.csv",
    "contact_sheet.png",
)
PREVIEW_TILES = 12


@dataclass(frozen=True)
class ArchiveSummary:
    """What :func:`write_archive` wrote."""

    out: Path
    studies: int
    lateral_images: int
    distractors: dict[str, int]
    boxes: int
    fractured_vertebrae: int
    fractured_studies: int
    planted_misses: int
    studies_without_read: int
    archive_bytes: int
    preview: Path | None


@dataclass(frozen=True)
class _Distractor:
    number: int
    kind: str
    host: int | None  # lateral study index it belongs to (AP view, SR), or None for its own study


@dataclass
class _Result:
    boxes: list[dict[str, str]] = field(default_factory=list)
    truth: list[dict[str, str]] = field(default_factory=list)
    reads: list[dict[str, str]] = field(default_factory=list)
    studies: list[dict[str, str]] = field(default_factory=list)
    manifest: list[dict[str, str]] = field(default_factory=list)
    coco_images: list[dict[str, object]] = field(default_factory=list)
    coco_boxes: list[tuple[int, dict[str, object], dict[str, object]]] = field(default_factory=list)
    tile: npt.NDArray[np.uint8] | None = None


def plan_distractors(seed: int, studies: int, config: SynthConfig) -> list[_Distractor]:
    """Deal distractor kinds: each configured kind once (in a seeded order) before any repeats."""
    n = round(config.distractor_rate * studies)
    rng = stream_rng(seed, 0, 99)
    kinds = list(config.distractor_kinds)
    order = [kinds[i] for i in rng.permutation(len(kinds))]
    out = []
    for j in range(n):
        kind = order[j] if j < len(order) else str(rng.choice(kinds))
        host = (
            int(rng.integers(0, studies))
            if kind in ("ap_spine", "sr_report") and studies > 0
            else None
        )
        out.append(_Distractor(j, kind, host))
    return out


def image_path(patient_id: str, accession: str, series: int, modality: str, sop_uid: str) -> str:
    """Archive-relative POSIX path of one instance."""
    return f"{patient_id}/{accession}/{series:03d}_{modality}/{sop_uid}.dcm"


def write_archive(
    out: Path,
    studies: int,
    seed: int,
    config: SynthConfig,
    workers: int = 1,
    preview: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveSummary:
    """Generate ``studies`` lateral studies plus distractors and write the world under ``out``.

    Parameters
    ----------
    out
        Output folder (created). Refused if it already holds an archive, unless ``overwrite``,
        which removes ``out/archive`` and the tables this function writes (nothing else).
    studies
        Number of lateral thoracolumbar studies.
    seed
        World seed; the same arguments give byte-identical files.
    config
        World configuration.
    workers
        Processes to generate studies in parallel (output does not depend on it).
    preview
        Also write ``contact_sheet.png`` with the first 12 studies.
    progress
        Called with (done, total) after each task.

    Raises
    ------
    UsageError
        When ``out`` already holds an archive and ``overwrite`` is false, or arguments are invalid.
    """
    if studies < 1:
        raise UsageError(f"--studies must be at least 1; got {studies}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1; got {workers}")
    archive = out / "archive"
    if archive.exists() or any((out / name).exists() for name in OUTPUT_FILES):
        if not overwrite:
            raise UsageError(
                f"{out} already holds a synthetic archive; choose another folder "
                "or pass --overwrite"
            )
        shutil.rmtree(archive, ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    archive.mkdir(parents=True, exist_ok=True)

    distractors = plan_distractors(seed, studies, config)
    hosted: dict[int, list[_Distractor]] = {}
    for d in distractors:
        if d.host is not None:
            hosted.setdefault(d.host, []).append(d)
    tasks: list[tuple[str, object]] = [("lateral", i) for i in range(studies)]
    tasks += [("distractor", d) for d in distractors if d.host is None]
    args = [(kind, item, seed, config, str(archive), hosted, preview) for kind, item in tasks]

    results: list[_Result] = []
    total = len(args)
    if workers == 1:
        for k, a in enumerate(args):
            results.append(_run_task(a))
            if progress:
                progress(k + 1, total)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for k, res in enumerate(pool.map(_run_task, args, chunksize=1)):
                results.append(res)
                if progress:
                    progress(k + 1, total)

    merged = _Result()
    for res in results:
        for name in ("boxes", "truth", "reads", "studies", "manifest", "coco_images", "coco_boxes"):
            getattr(merged, name).extend(getattr(res, name))
    _write_csv(out / "boxes.csv", BOX_COLUMNS, merged.boxes)
    _write_csv(out / "ground_truth.csv", TRUTH_COLUMNS, merged.truth)
    _write_csv(out / "reads.csv", READ_COLUMNS, merged.reads)
    _write_csv(out / "studies.csv", STUDY_COLUMNS, merged.studies)
    _write_csv(
        out / "manifest.csv", MANIFEST_COLUMNS, sorted(merged.manifest, key=lambda r: r["file"])
    )
    _write_coco(out / "boxes.json", merged, with_truth=False)
    _write_coco(out / "ground_truth.json", merged, with_truth=True)
    sheet_path = None
    if preview:
        tiles = [r.tile for r in results if r.tile is not None][:PREVIEW_TILES]
        sheet_path = out / "contact_sheet.png"
        save_sheet(contact_sheet(tiles), sheet_path)

    counts: dict[str, int] = {}
    for d in distractors:
        counts[d.kind] = counts.get(d.kind, 0) + 1
    return ArchiveSummary(
        out=out,
        studies=studies,
        lateral_images=studies,
        distractors=counts,
        boxes=len(merged.boxes),
        fractured_vertebrae=sum(1 for r in merged.truth if r["label"] == "fracture"),
        fractured_studies=sum(1 for r in merged.studies if r["fractured_levels"]),
        planted_misses=sum(1 for r in merged.studies if r["planted_miss_levels"]),
        studies_without_read=sum(1 for r in merged.studies if r["read_present"] == "no"),
        archive_bytes=sum(int(r["bytes"]) for r in merged.manifest),
        preview=sheet_path,
    )


def _run_task(
    args: tuple[str, object, int, SynthConfig, str, dict[int, list[_Distractor]], bool],
) -> _Result:
    kind, item, seed, config, archive, hosted, preview = args
    root = Path(archive)
    if kind == "lateral":
        assert isinstance(item, int)
        return _lateral(item, seed, config, root, hosted.get(item, []), preview)
    assert isinstance(item, _Distractor)
    return _standalone(item, seed, config, root)


def _ident(study: SynthStudy) -> dict[str, str]:
    h = study.header
    return {
        "patient_name": h.patient_name,
        "patient_id": h.patient_id,
        "birth_date": h.birth_date,
        "sex": h.sex,
        "study_date": h.study_date,
        "study_time": h.study_time,
        "accession_number": h.accession_number,
        "study_description": h.study_description,
        "series_description": h.series_description,
        "modality": h.modality,
        "series_number": str(h.series_number),
        "instance_number": str(h.instance_number),
        "body_part": h.body_part,
        "view_position": h.view_position,
        "protocol_name": h.protocol_name,
    }


def lateral_dataset(study: SynthStudy) -> tuple[Dataset, str]:
    """The study's lateral image as a pydicom Dataset and the transfer syntax used."""
    h = study.header
    acq = study.scene.acquisition
    storage = dicom.DX_STORAGE if h.modality == "DX" else dicom.CR_STORAGE
    ds = dicom.base_dataset(storage, h.sop_uid, h.study_uid, h.series_uid, _ident(study))
    facing = "A" if study.scene.grid.facing_right else "P"
    window = study.window if stream_rng(study.seed, study.index, 6).random() < 0.75 else None
    dicom.radiograph_module(
        ds,
        modality=h.modality,
        view_position=h.view_position,
        pixel_spacing=acq.pixel_spacing,
        window=window,
        kvp=acq.kvp,
        mas=acq.mas,
        photometric=acq.photometric,
        orientation=(facing, "F"),
    )
    syntax = dicom.set_image(ds, study.stored, acq.bits_stored, acq.photometric, h.transfer_syntax)
    return ds, syntax


def _lateral(
    index: int, seed: int, config: SynthConfig, root: Path, hosted: list[_Distractor], preview: bool
) -> _Result:
    study = generate_study(seed, index, config)
    h = study.header
    res = _Result()
    rel = image_path(h.patient_id, h.accession_number, h.series_number, h.modality, h.sop_uid)
    ds, syntax = lateral_dataset(study)
    size = dicom.write(ds, root / rel)
    res.manifest.append(
        _manifest(rel, "lateral_tl", "candidate", h.modality, syntax, h.study_uid, size)
    )
    rows, cols = study.stored.shape
    image_entry: dict[str, object] = {
        "file_name": rel,
        "width": cols,
        "height": rows,
        "sop_instance_uid": h.sop_uid,
    }
    res.coco_images.append(image_entry)
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
        res.boxes.append(dict(base))
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
        res.truth.append(truth)
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
        res.coco_boxes.append((len(res.coco_images) - 1, plain, full))

    r = study.read
    if r.present:
        res.reads.append(
            {
                "accession_number": h.accession_number,
                "study_uid": h.study_uid,
                "image": rel,
                "fracture_reported": "yes" if r.fracture_reported else "no",
                "reported_levels": ";".join(r.reported_levels),
                "impression": r.impression,
            }
        )
    res.studies.append(
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

    ident = _ident(study)
    for d in hosted:
        drng = stream_rng(seed, 1_000_000 + d.number, 0)
        series = 10 + d.number
        sop = uid(seed, "distractor", d.number, "instance")
        series_uid = uid(seed, "distractor", d.number, "series")
        if d.kind == "ap_spine":
            ident_d = dict(
                ident,
                series_description=str(
                    drng.choice(["L-SPINE AP", "LUMBAR SPINE AP", "T-L SPINE AP"])
                ),
                view_position="AP",
                protocol_name="Spine AP",
                series_number=str(series),
            )
            made = radiograph_distractor(
                "ap_spine", drng, ident_d, (h.study_uid, series_uid, sop), config.uncompressed
            )
        else:
            ident_d = dict(
                ident,
                modality="SR",
                series_description="Radiology report",
                series_number=str(series),
                body_part="",
            )
            made = sr_distractor(r.impression, ident_d, (h.study_uid, series_uid, sop))
        rel_d = image_path(h.patient_id, h.accession_number, series, ident_d["modality"], sop)
        size_d = dicom.write(made.dataset, root / rel_d)
        res.manifest.append(
            _manifest(
                rel_d,
                d.kind,
                made.expected,
                ident_d["modality"],
                str(made.dataset.file_meta.TransferSyntaxUID),
                h.study_uid,
                size_d,
            )
        )
    if preview and index < PREVIEW_TILES:
        res.tile = study_tile(study)
    return res


def _standalone(d: _Distractor, seed: int, config: SynthConfig, root: Path) -> _Result:
    res = _Result()
    rng = stream_rng(seed, 1_000_000 + d.number, 0)
    number = d.number
    patient_id = f"SYN{seed % 10000:04d}-X{number:04d}"
    accession = f"SX{seed % 10000:04d}{number:06d}"
    study_uid = uid(seed, "distractor", number, "study")
    series_uid = uid(seed, "distractor", number, "series")
    sop = uid(seed, "distractor", number, "instance")
    ident = {
        "patient_name": f"SYNTHETIC^OTHER{number:04d}",
        "patient_id": patient_id,
        "birth_date": f"{int(rng.integers(1930, 2005))}0101",
        "sex": str(rng.choice(["F", "M"])),
        "study_date": fake_date(rng),
        "study_time": "120000",
        "accession_number": accession,
        "study_description": "",
        "series_description": "",
        "modality": "DX",
        "series_number": "1",
        "instance_number": "1",
        "body_part": "",
        "view_position": "",
        "protocol_name": "",
    }
    kind = d.kind
    if kind == "chest":
        view = str(rng.choice(["PA", "AP", "LL"]))
        ident.update(
            modality=str(rng.choice(["DX", "CR"])),
            body_part="CHEST",
            view_position=view,
            study_description="XR CHEST",
            series_description=f"CHEST {view}",
            protocol_name="Chest",
        )
        made = radiograph_distractor(
            kind, rng, ident, (study_uid, series_uid, sop), config.uncompressed
        )
    elif kind == "extremity":
        part = str(rng.choice(["KNEE", "ANKLE", "HAND", "WRIST"]))
        view = str(rng.choice(["AP", "LAT", "LATERAL"]))
        ident.update(
            modality=str(rng.choice(["DX", "CR"])),
            body_part=part,
            view_position=view if view != "LATERAL" else "",
            study_description=f"XR {part}",
            series_description=f"{part} {view}",
            protocol_name=part.title(),
        )
        made = radiograph_distractor(
            kind, rng, ident, (study_uid, series_uid, sop), config.uncompressed
        )
    elif kind == "ct_slice":
        ident.update(
            modality="CT",
            body_part="LSPINE",
            study_description="CT L-SPINE W/O CONTRAST",
            series_description="AXIAL BONE 1.0",
            protocol_name="CT Spine Trauma",
        )
        made = ct_distractor(rng, ident, (study_uid, series_uid, sop))
    elif kind == "mr_slice":
        ident.update(
            modality="MR",
            body_part="LSPINE",
            study_description="MR L-SPINE",
            series_description="SAG T2 TSE",
            protocol_name="L-Spine Routine",
        )
        made = mr_distractor(rng, ident, (study_uid, series_uid, sop))
    elif kind == "sr_report":  # only when there is no lateral study to host it
        ident.update(modality="SR")
        made = sr_distractor("No acute fracture.", ident, (study_uid, series_uid, sop))
    elif kind == "ap_spine":
        ident.update(body_part="LSPINE", view_position="AP", series_description="L-SPINE AP")
        made = radiograph_distractor(
            kind, rng, ident, (study_uid, series_uid, sop), config.uncompressed
        )
    elif kind == "truncated":
        small = SynthConfig(max_side=min(config.max_side, 1000), uncompressed=config.uncompressed)
        study = generate_study(seed, 1_000_000 + number, small)
        ds, syntax = lateral_dataset(study)
        data = dicom.to_bytes(ds)
        cut = int(len(data) * rng.uniform(0.4, 0.7))
        h = study.header
        rel = image_path(h.patient_id, h.accession_number, h.series_number, h.modality, h.sop_uid)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:cut])
        res.manifest.append(
            _manifest(rel, kind, "unreadable", h.modality, syntax, h.study_uid, cut)
        )
        return res
    else:  # non_dicom
        rel = f"{patient_id}/{accession}/001_OT/{sop}.dcm"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = NON_DICOM_TEXT.encode("ascii")
        path.write_bytes(data)
        res.manifest.append(_manifest(rel, kind, "skipped", "", "", "", len(data)))
        return res
    modality = ident["modality"]
    rel = image_path(patient_id, accession, 1, modality, sop)
    size = dicom.write(made.dataset, root / rel)
    res.manifest.append(
        _manifest(
            rel,
            kind,
            made.expected,
            modality,
            str(made.dataset.file_meta.TransferSyntaxUID),
            study_uid,
            size,
        )
    )
    return res


def _manifest(
    rel: str, kind: str, expected: str, modality: str, syntax: str, study_uid: str, size: int
) -> dict[str, str]:
    return {
        "file": rel,
        "kind": kind,
        "expected_triage": expected,
        "modality": modality,
        "transfer_syntax": syntax,
        "study_uid": study_uid,
        "bytes": str(size),
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})


def _write_coco(path: Path, merged: _Result, with_truth: bool) -> None:
    images = []
    for i, entry in enumerate(merged.coco_images):
        images.append({"id": i + 1, **entry})
    # coco_boxes hold indices local to each task; rebuild global image ids by file name order.
    annotations = []
    index_of = {str(e["file_name"]): i + 1 for i, e in enumerate(merged.coco_images)}
    file_of_box = [row["image"] for row in merged.boxes]
    for k, ((_, plain, full), file_name) in enumerate(
        zip(merged.coco_boxes, file_of_box, strict=True)
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
