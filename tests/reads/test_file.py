"""The reads file as reads: column names, yes/no in many languages, text and structure together,
and bad rows that become counted, named errors without quoting the report."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest

from auditor.errors import InputFileError, UsageError
from auditor.reads.columns import map_columns, parse_mapping, read_mapping_file
from auditor.reads.file import MAX_REPORT_CHARS, read_reads
from auditor.vocab import Level, Mention


def _csv(tmp_path: Path, text: str, name: str = "reads.csv", codec: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(codec))
    return path


@pytest.mark.parametrize(
    ("header", "roles"),
    [
        ("Accession Number,Report Text", {"accession_number": 0, "text": 1}),
        ("StudyInstanceUID;Befundtext;Fraktur", {"study_uid": 0, "text": 1}),
        ("Numéro d'accès,Compte rendu,Date de l'examen", {"accession_number": 0, "text": 1}),
        ("ID paziente,Numero di accesso,Referto", {"patient_id": 0, "text": 2}),
        ("Número de acceso,Informe,Fecha", {"accession_number": 0, "study_date": 2}),
        ("Study Instance UID,fracture_reported,reported_levels", {"reported_levels": 2}),
    ],
)
def test_common_export_names_are_recognised(header: str, roles: dict[str, int]) -> None:
    names = header.replace(";", ",").split(",")
    mapping = map_columns(names)
    for role, index in roles.items():
        assert mapping.first(role) == index
        assert mapping.found_by[role] == "recognised"


def test_user_mapping_wins_and_key_is_decided_by_values() -> None:
    header = ["AccNr", "Text1", "Text2", "Bericht"]
    user = parse_mapping(["key=AccNr", "text=Text1", "report=text2"])
    mapping = map_columns(header, user, {0: ["1.2.840.1", "1.2.840.2"]})
    assert mapping.columns["study_uid"] == (0,)
    assert mapping.columns["text"] == (1, 2)  # Bericht is not guessed once the user named text
    assert mapping.found_by["text"] == "user"
    mapping = map_columns(header, parse_mapping(["key=AccNr"]), {0: ["A17", "1.2.3"]})
    assert mapping.columns["accession_number"] == (0,)


@pytest.mark.parametrize(
    ("items", "message"),
    [(["text"], "expected role=Column"), (["colour=x"], "unknown reads column role")],
)
def test_bad_user_mapping_raises(items: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mapping(items)


def test_mapping_file_as_lines_or_json(tmp_path: Path) -> None:
    lines = tmp_path / "map.txt"
    lines.write_text("# our RIS\naccession=AccNr\ntext = Befundtext\n", "utf-8")
    assert read_mapping_file(lines) == {"accession_number": ["AccNr"], "text": ["Befundtext"]}
    as_json = tmp_path / "map.json"
    as_json.write_text('{"accession": "AccNr", "text": ["Befund", "Beurteilung"]}', "utf-8")
    assert read_mapping_file(as_json) == {
        "accession_number": ["AccNr"],
        "text": ["Befund", "Beurteilung"],
    }
    bad = tmp_path / "bad.txt"
    bad.write_text("nonsense=x\n", "utf-8")
    with pytest.raises(InputFileError, match="unknown reads column role"):
        read_mapping_file(bad)


def test_a_column_the_user_names_must_exist(tmp_path: Path) -> None:
    path = _csv(tmp_path, "acc,report\nA1,Fracture of L1.\n")
    with pytest.raises(InputFileError, match="has no column 'Befundtext'"):
        read_reads(path, {"text": ["Befundtext"]})


YES_NO = [
    *[(word, True) for word in ("yes", "Y", "TRUE", "1", "ja", "Oui", "sì", "SÍ", "positive")],
    *[(word, False) for word in ("no", "n", "False", "0", "NEIN", "non", "No", "negative")],
]


@pytest.mark.parametrize(("word", "reported"), YES_NO)
def test_structured_yes_no_in_many_languages(tmp_path: Path, word: str, reported: bool) -> None:
    reads = read_reads(_csv(tmp_path, f"accession_number,fracture_reported\nA1,{word}\n"))
    assert reads.errors == ()
    assert reads.rows[0].fracture_reported is reported


def test_german_export_with_text_only(tmp_path: Path) -> None:
    text = (
        "Untersuchungsnummer;Befundtext\r\n"
        "U1;Frische Deckplattenimpressionsfraktur LWK 1. BWK 12 intakt.\r\n"
        "U2;Keine Fraktur.\r\n"
    )
    reads = read_reads(_csv(tmp_path, text, codec="cp1252"))
    assert reads.errors == ()
    first, second = reads.rows
    assert first.fracture_reported and first.reported_levels == (Level.L1,)
    assert first.mention_of("T12") is not None
    assert first.mention_of("T12").mention is Mention.NEGATED  # type: ignore[union-attr]
    assert not second.fracture_reported and second.reported_levels == ()
    assert reads.info is not None and reads.info.delimiter == "semicolon"
    assert any(line.startswith("column text <- Befundtext") for line in reads.notes)


def test_text_and_structure_are_both_read_and_disagreement_is_noted(tmp_path: Path) -> None:
    body = (
        "accession_number,fracture_reported,reported_levels,report\n"
        "A1,yes,L1,Compression fracture of L1.\n"  # agree
        "A2,no,,Compression fracture of L2.\n"  # disagree: yes/no
        "A3,yes,T12,Compression fracture of L3. T12 intact.\n"  # disagree: levels
        "A4,yes,L4,\n"  # structure only
    )
    reads = read_reads(_csv(tmp_path, body))
    a1, a2, a3, a4 = reads.rows
    assert a1.disagreement == ""
    assert a2.fracture_reported and a2.reported_levels == (Level.L2,)
    assert a2.disagreement == (
        "structured columns say no fracture; report text says fracture at L2"
    )
    assert a3.reported_levels == (Level.T12, Level.L3)
    assert "structured columns say fracture at T12" in a3.disagreement
    assert a4.reported_levels == (Level.L4,) and a4.disagreement == ""
    assert reads.info is not None and reads.info.disagreements == 2


SECRET = "Zebra-Marker-4711"


def test_bad_rows_are_named_errors_without_report_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    huge = f"Fracture of L1. {SECRET} " + "x" * (MAX_REPORT_CHARS + 10)
    body = (
        "accession_number,fracture_reported,report\n"
        "OK1,,Compression fracture of L1.\n"
        f'B1,,"{huge}"\n'
        f"B2,,{SECRET} \x01\x02\x03 binary\n"
        f"B3,maybe,{SECRET}\n"
        "B4,,\n"
        f",,{SECRET} fracture of L2\n"
        "OK1,no,duplicate\n"
    )
    with caplog.at_level(logging.DEBUG):
        reads = read_reads(_csv(tmp_path, body))
    assert [r.accession_number for r in reads.rows] == ["OK1"]
    reasons = {e.row: e.reason for e in reads.errors}
    assert f"{MAX_REPORT_CHARS:,} a report may have" in reasons[2]
    assert "binary data" in reasons[3]
    assert "must be yes or no, got 'maybe'" in reasons[4]
    assert "report text is empty" in reasons[5]
    assert "no accession_number, study_uid or image" in reasons[6]
    assert "already given in row 1" in reasons[7]
    assert [e.key for e in reads.errors][:3] == ["B1", "B2", "B3"]
    for error in reads.errors:
        assert SECRET not in str(error)
    assert SECRET not in caplog.text


def test_mixed_types_in_a_workbook_column_are_row_errors(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Accession", "Fracture", "Report"])
    sheet.append([1001, True, "Fracture of L1."])
    sheet.append([1002.0, 0, None])
    sheet.append([1003, datetime.date(2021, 5, 1), None])
    sheet.append([1004, "ja", 42])
    sheet.append([datetime.datetime(2020, 1, 1), "no", None])
    path = tmp_path / "reads.xlsx"
    book.save(path)
    reads = read_reads(path)
    assert [(r.accession_number, r.fracture_reported) for r in reads.rows] == [
        ("1001", True),
        ("1002", False),
    ]
    reasons = [e.reason for e in reads.errors]
    assert reasons == [
        "fracture_reported is a date, expected yes or no",
        "report text is a number, expected text",
        "accession_number is a date, expected text or a number",
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("accession_number,comment", "no report text and no fracture_reported"),
        ("comment,report", "no column to match a study by"),
    ],
)
def test_files_without_the_columns_raise(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(InputFileError, match=message):
        read_reads(_csv(tmp_path, header + "\nx,y\n"))
