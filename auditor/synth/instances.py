"""The files of a synthetic archive as DICOM instances: the lateral image of each study and the
distractors dealt around them, each with its header and where it goes.

A lateral study's header comes from its :class:`~auditor.synth.study.HeaderPlan`; an AP view or an
SR report hosted by a lateral study shares its patient and study, the other distractors get a
patient and study of their own. The DICOM modules themselves are built by
:mod:`auditor.synth.dicom` and the distractors' pixels by :mod:`auditor.synth.distractors`; the
files are written by :func:`auditor.synth.writers.write_instance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from auditor.synth import dicom
from auditor.synth.config import SynthConfig
from auditor.synth.distractors import (
    NON_DICOM_TEXT,
    DistractorFile,
    ct_distractor,
    mr_distractor,
    radiograph_distractor,
    sr_distractor,
)
from auditor.synth.study import SynthStudy, fake_date, generate_study, stream_rng, uid


@dataclass(frozen=True)
class Distractor:
    """One distractor dealt by :func:`plan_distractors`."""

    number: int
    kind: str
    host: int | None  # lateral study index it belongs to (AP view, SR), or None for its own study


@dataclass(frozen=True)
class Instance:
    """One file of the archive: where it goes, what it holds and what triage should make of it.

    Exactly one of ``dataset`` (written as a DICOM Part 10 file) and ``data`` (written as is: a
    truncated DICOM file, a file that is not DICOM) is set.
    """

    rel: str  # archive-relative POSIX path
    kind: str  # "lateral_tl" or a distractor kind
    expected: str  # expected triage: "candidate", "skipped" or "unreadable"
    modality: str
    transfer_syntax: str
    study_uid: str
    dataset: Dataset | None = None
    data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.data is None):
            raise ValueError(f"{self.rel}: an instance holds either a dataset or bytes")


def plan_distractors(seed: int, studies: int, config: SynthConfig) -> list[Distractor]:
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
        out.append(Distractor(j, kind, host))
    return out


def image_path(patient_id: str, accession: str, series: int, modality: str, sop_uid: str) -> str:
    """Archive-relative POSIX path of one instance."""
    return f"{patient_id}/{accession}/{series:03d}_{modality}/{sop_uid}.dcm"


def study_ident(study: SynthStudy) -> dict[str, str]:
    """The study's header as the identity fields :func:`auditor.synth.dicom.base_dataset` reads."""
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
    ds = dicom.base_dataset(storage, h.sop_uid, h.study_uid, h.series_uid, study_ident(study))
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


def lateral_instance(study: SynthStudy) -> Instance:
    """The study's lateral image, a triage candidate."""
    h = study.header
    ds, syntax = lateral_dataset(study)
    return Instance(
        rel=image_path(h.patient_id, h.accession_number, h.series_number, h.modality, h.sop_uid),
        kind="lateral_tl",
        expected="candidate",
        modality=h.modality,
        transfer_syntax=syntax,
        study_uid=h.study_uid,
        dataset=ds,
    )


def hosted_instances(
    study: SynthStudy, hosted: list[Distractor], seed: int, config: SynthConfig
) -> list[Instance]:
    """The AP views and SR reports ``hosted`` by a lateral study, in its patient and study."""
    h = study.header
    ident = study_ident(study)
    out = []
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
            made = sr_distractor(study.read.impression, ident_d, (h.study_uid, series_uid, sop))
        rel = image_path(h.patient_id, h.accession_number, series, ident_d["modality"], sop)
        out.append(_distractor_instance(rel, d.kind, made, ident_d["modality"], h.study_uid))
    return out


def standalone_instance(d: Distractor, seed: int, config: SynthConfig) -> Instance:
    """A distractor in a patient and study of its own."""
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
        return Instance(
            rel=image_path(
                h.patient_id, h.accession_number, h.series_number, h.modality, h.sop_uid
            ),
            kind=kind,
            expected="unreadable",
            modality=h.modality,
            transfer_syntax=syntax,
            study_uid=h.study_uid,
            data=data[:cut],
        )
    else:  # non_dicom
        return Instance(
            rel=f"{patient_id}/{accession}/001_OT/{sop}.dcm",
            kind=kind,
            expected="skipped",
            modality="",
            transfer_syntax="",
            study_uid="",
            data=NON_DICOM_TEXT.encode("ascii"),
        )
    modality = ident["modality"]
    rel = image_path(patient_id, accession, 1, modality, sop)
    return _distractor_instance(rel, kind, made, modality, study_uid)


def _distractor_instance(
    rel: str, kind: str, made: DistractorFile, modality: str, study_uid: str
) -> Instance:
    return Instance(
        rel=rel,
        kind=kind,
        expected=made.expected,
        modality=modality,
        transfer_syntax=str(made.dataset.file_meta.TransferSyntaxUID),
        study_uid=study_uid,
        dataset=made.dataset,
    )
