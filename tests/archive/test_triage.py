"""Header-only triage rules (auditor.archive.triage) on header records and generated DICOMs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from auditor.archive.triage import (
    Reason,
    TriageRules,
    find_keyword,
    load_file_list,
    normalise_words,
    triage_header,
)
from auditor.errors import InputFileError
from auditor.io.radiograph import read_header
from auditor.records import RadiographMeta
from auditor.vocab import FileStatus
from tests.helpers.dicom_files import make_dicom

BASE = RadiographMeta(
    path=Path("x.dcm"),
    file_format="dicom",
    modality="DX",
    rows=64,
    columns=48,
    photometric="MONOCHROME2",
    bits_stored=12,
)


def decide(rules: TriageRules | None = None, relpath: str = "a/x.dcm", **fields: object):
    return triage_header(replace(BASE, **fields), relpath, rules or TriageRules())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"body_part": "LSPINE", "view_position": "LL"}, Reason.LATERAL_TL),
        ({"body_part": "TSPINE", "view_position": "RL"}, Reason.LATERAL_TL),
        ({"body_part": "L-SPINE", "view_position": "LAT"}, Reason.LATERAL_TL),
        ({"body_part": "SPINE", "view_position": "LATERAL"}, Reason.LATERAL_TL),
        ({"series_description": "LWS seitlich"}, Reason.LATERAL_TL),
        ({"series_description": "BWS/LWS lat."}, Reason.LATERAL_TL),
        ({"protocol_name": "Lendenwirbelsäule LL"}, Reason.LATERAL_TL),
        ({"study_description": "Colonna lombare laterolaterale"}, Reason.LATERAL_TL),
        ({"series_description": "Rachis lombaire profil"}, Reason.LATERAL_TL),
        ({"series_description": "Columna dorsal lateral"}, Reason.LATERAL_TL),
        ({"series_description": "Coluna lombar perfil"}, Reason.LATERAL_TL),
        ({"body_part": "", "series_description": "T/L spine lat"}, Reason.LATERAL_TL),
        ({"body_part": "CHEST", "series_description": "BWS seitlich"}, Reason.LATERAL_TL),
        # view position beats descriptions; descriptions decide only when it is blank
        (
            {"body_part": "LSPINE", "view_position": "LL", "series_description": "AP"},
            Reason.LATERAL_TL,
        ),
    ],
)
def test_lateral_tl_views_are_candidates(fields, reason):
    decision = decide(**fields)
    assert decision.status is FileStatus.CANDIDATE, decision
    assert decision.reason is reason


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        (
            {"modality": "CT", "body_part": "LSPINE", "view_position": "LL"},
            Reason.NOT_RADIOGRAPH,
            "CT",
        ),
        (
            {"modality": "RF", "body_part": "LSPINE", "view_position": "LL"},
            Reason.NOT_RADIOGRAPH,
            "RF",
        ),
        ({"modality": "OT", "body_part": "LSPINE"}, Reason.NOT_RADIOGRAPH, "OT"),
        ({"body_part": "LSPINE", "view_position": "AP"}, Reason.FRONTAL_VIEW, "AP"),
        ({"body_part": "TSPINE", "view_position": "PA"}, Reason.FRONTAL_VIEW, "PA"),
        ({"body_part": "LSPINE", "view_position": "LAO"}, Reason.OTHER_VIEW, "LAO"),
        ({"series_description": "LWS a.p."}, Reason.FRONTAL_VIEW, "AP"),
        ({"body_part": "LSPINE"}, Reason.NO_VIEW, "no view position"),
        ({"body_part": "LSPINE", "series_description": "LWS AP + LAT"}, Reason.NO_VIEW, ""),
        ({"body_part": "CHEST", "view_position": "LL"}, Reason.OTHER_BODY_PART, "CHEST"),
        ({"body_part": "CSPINE", "view_position": "LL"}, Reason.OTHER_BODY_PART, "cervical"),
        (
            {"body_part": "SPINE", "series_description": "HWS seitlich"},
            Reason.OTHER_BODY_PART,
            "HWS",
        ),
        ({"view_position": "LL"}, Reason.NO_BODY_PART, "no descriptions"),
        ({"body_part": "HIP", "laterality": "R"}, Reason.OTHER_BODY_PART, "Image Laterality R"),
        ({"body_part": "HIP", "series_description": "bilateral"}, Reason.OTHER_BODY_PART, "HIP"),
        ({"has_pixels": False}, Reason.NO_PIXEL_DATA, ""),
        ({"frames": 12, "body_part": "LSPINE", "view_position": "LL"}, Reason.MULTI_FRAME, "12"),
        ({"photometric": "RGB", "samples_per_pixel": 3}, Reason.COLOUR, "RGB"),
    ],
)
def test_other_files_are_skipped_with_a_reason(fields, reason, detail):
    decision = decide(**fields)
    assert decision.status is FileStatus.SKIPPED, decision
    assert decision.reason is reason
    assert detail in decision.detail


def test_broken_pixel_data_from_header_is_unreadable():
    decision = decide(
        body_part="LSPINE", view_position="LL", pixel_data_error="pixel data truncated"
    )
    assert decision.status is FileStatus.UNREADABLE
    assert decision.reason is Reason.BROKEN_PIXEL_DATA


def test_accept_blank_view_and_blank_body_part():
    rules = TriageRules(accept_blank_view=True)
    assert decide(rules, body_part="LSPINE").reason is Reason.LATERAL_TL_BLANK_VIEW
    assert decide(rules, body_part="LSPINE", view_position="AP").status is FileStatus.SKIPPED
    rules = TriageRules(accept_blank_body_part=True)
    assert decide(rules, view_position="LL").reason is Reason.TL_BLANK_BODY_PART
    assert decide(rules, body_part="CHEST", view_position="LL").status is FileStatus.SKIPPED


def test_include_all_radiographs_widens_to_every_accepted_modality():
    rules = TriageRules(include_all_radiographs=True)
    assert decide(rules, body_part="CHEST", view_position="PA").reason is Reason.ALL_RADIOGRAPHS
    assert decide(rules, modality="CT").status is FileStatus.SKIPPED
    assert decide(rules, frames=3).reason is Reason.MULTI_FRAME


def test_modalities_and_keywords_are_configurable():
    narrow = TriageRules(modalities=frozenset({"cr"}))
    assert narrow.modalities == frozenset({"CR"})
    assert decide(narrow, body_part="LSPINE", view_position="LL").reason is Reason.NOT_RADIOGRAPH
    widened = TriageRules().widened(tl_keywords=["KREUZ"], lateral_keywords=["QUER"])
    assert decide(widened, series_description="Kreuz quer").status is FileStatus.CANDIDATE
    assert decide(TriageRules(), series_description="Kreuz quer").status is FileStatus.SKIPPED


def test_files_list_takes_exactly_the_listed_paths():
    rules = TriageRules(files=frozenset({"./a/x.dcm", "b\\y.dcm"}))
    assert rules.files == frozenset({"a/x.dcm", "b/y.dcm"})
    assert decide(rules, relpath="a/x.dcm", modality="CT").reason is Reason.LISTED
    assert decide(rules, relpath="b/y.dcm").status is FileStatus.CANDIDATE
    assert decide(rules, relpath="c/z.dcm", body_part="LSPINE", view_position="LL").reason is (
        Reason.NOT_LISTED
    )
    # A listed file that cannot be processed is still skipped with its own reason.
    assert decide(rules, relpath="a/x.dcm", has_pixels=False).reason is Reason.NO_PIXEL_DATA


def test_raster_files_use_folder_and_file_names():
    png = replace(BASE, file_format="png", modality="")
    rules = TriageRules()
    assert triage_header(png, "LWS/patient7_seitlich.png", rules).status is FileStatus.CANDIDATE
    assert triage_header(png, "LWS/patient7_ap.png", rules).reason is Reason.FRONTAL_VIEW
    assert triage_header(png, "export/img001.png", rules).reason is Reason.NO_BODY_PART


def test_keyword_normalisation():
    assert normalise_words("Lendenwirbelsäule seitl.") == ("LENDENWIRBELSAEULE", "SEITL")
    assert normalise_words("Rachis lombaire (profil) / élève") == (
        "RACHIS", "LOMBAIRE", "PROFIL", "ELEVE",
    )  # fmt: skip
    assert find_keyword("L-Spine", ["LSPINE"]) == "LSPINE"
    assert find_keyword("T / L spine", ["TLSPINE"]) == "TLSPINE"
    assert find_keyword("Brustwirbelsäule", ["WIRBELSAEULE"], substrings=True) == "WIRBELSAEULE"
    assert find_keyword("bilateral hips", ["LATERAL"]) is None
    assert find_keyword("PLATE", ["LAT"]) is None


def test_generated_dicom_headers_triage(tmp_path: Path):
    lateral = make_dicom(tmp_path / "lat.dcm", body_part="LSPINE", view="LL")
    frontal = make_dicom(tmp_path / "ap.dcm", body_part="LSPINE", view="AP")
    keyword = make_dicom(
        tmp_path / "kw.dcm",
        modality="CR",
        body_part=None,
        view=None,
        series_description="BWS seitlich",
    )
    rules = TriageRules()
    assert triage_header(read_header(lateral), "lat.dcm", rules).status is FileStatus.CANDIDATE
    assert triage_header(read_header(frontal), "ap.dcm", rules).reason is Reason.FRONTAL_VIEW
    assert triage_header(read_header(keyword), "kw.dcm", rules).reason is Reason.LATERAL_TL


@pytest.mark.parametrize(
    ("content", "match"),
    [("", "no paths"), ("# only a comment\n\n", "no paths"), (None, "cannot read")],
)
def test_bad_files_list(tmp_path: Path, content: str | None, match: str):
    path = tmp_path / "list.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=match):
        load_file_list(path)


def test_files_list_reads_paths_and_comments(tmp_path: Path):
    path = tmp_path / "list.txt"
    path.write_text("\ufeffa/x.dcm  # the lateral\n\n./b/y.dcm\n")
    assert load_file_list(path) == frozenset({"a/x.dcm", "b/y.dcm"})


CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MAMMOGRAPHY = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.mark.parametrize(
    ("modality", "sop_class", "reason", "detail"),
    [
        ("", CR_STORAGE, Reason.LATERAL_TL, "modality blank, CR from the SOP Class"),
        ("", DX_PRESENTATION, Reason.LATERAL_TL, "DX from the SOP Class (Digital X-Ray"),
        ("", DX_PROCESSING, Reason.LATERAL_TL, "For Processing"),
        ("", SECONDARY_CAPTURE, Reason.NOT_RADIOGRAPH, "modality blank"),
        ("", MAMMOGRAPHY, Reason.NOT_RADIOGRAPH, "modality blank"),
        ("", "", Reason.NOT_RADIOGRAPH, "modality blank"),
        ("CT", DX_PRESENTATION, Reason.NOT_RADIOGRAPH, "modality CT"),  # a stated one wins
    ],
)
def test_a_blank_modality_is_read_from_the_sop_class(
    modality: str, sop_class: str, reason: Reason, detail: str
) -> None:
    """Public research sets strip Modality; the SOP Class still says CR or DX."""
    decision = decide(
        modality=modality, sop_class_uid=sop_class, body_part="LSPINE", view_position="LL"
    )
    assert decision.reason is reason, decision
    assert detail in decision.detail


def test_the_sop_class_stands_for_a_modality_the_rules_accept_only(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "x.dcm", modality="DX", body_part="SPINE", view="LAT")
    meta = replace(read_header(path), modality="")  # stripped, as public sets do
    assert meta.sop_class_uid == DX_PRESENTATION
    assert triage_header(meta, "x.dcm", TriageRules()).status is FileStatus.CANDIDATE
    only_cr = TriageRules(modalities=frozenset({"CR"}))
    skipped = triage_header(meta, "x.dcm", only_cr)
    assert skipped.reason is Reason.NOT_RADIOGRAPH and "modality DX" in skipped.detail
    everything = triage_header(meta, "x.dcm", TriageRules(include_all_radiographs=True))
    assert everything.reason is Reason.ALL_RADIOGRAPHS and "from the SOP Class" in everything.detail
