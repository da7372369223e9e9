"""A read as the reports show it: each reported level's mention kind and sentence, the
disagreement between text and structured columns, and pseudonymisation of the sentences."""

from __future__ import annotations

from pathlib import Path

from auditor.records import (
    LevelMention,
    RadiographMeta,
    ReadRow,
    StudyFinding,
    StudyFlag,
    StudyStatus,
)
from auditor.reports.pseudonym import Pseudonymiser
from auditor.scan.assemble import _shown_read
from auditor.vocab import Level, Mention

SENTENCE = "Old wedge fracture of T12, discussed with Mr Doe (PID-77)."


def _read(**kw: object) -> ReadRow:
    values: dict[str, object] = {
        "row": 1,
        "accession_number": "ACC1",
        "study_uid": "1.2.3",
        "image": "",
        "fracture_reported": True,
        "reported_levels": (Level.T12, Level.L1),
        "impression": SENTENCE,
        "mentions": (LevelMention("T12", Mention.OLD, SENTENCE),),
        "patient_id": "PID-77",
    }
    values.update(kw)
    return ReadRow(**values)  # type: ignore[arg-type]


def _finding(read: ReadRow) -> StudyFinding:
    flag = StudyFlag(StudyStatus.CONCORDANT_POSITIVE, 0.0, (Level.L1,), ())
    return StudyFinding(
        "k", "", "", "", "", "", "", (), "", flag, read, (), ""
    )  # fmt: skip


def test_read_text_names_each_mention_kind_and_sentence() -> None:
    assert _finding(_read()).read_text == f'fracture reported (T12 old: "{SENTENCE}"; L1)'
    disagreeing = _read(disagreement="structured columns say no fracture; report text says …")
    assert _finding(disagreeing).read_text.endswith("; structured columns say no fracture; "
                                                    "report text says …")  # fmt: skip


def test_pseudonymised_read_scrubs_the_sentences_and_patient_id() -> None:
    anon = Pseudonymiser("salt", enabled=True)
    meta = RadiographMeta(Path("x.dcm"), "dicom", patient_id="PID-77", patient_name="DOE^JOHN")
    shown = _shown_read(_read(), anon, [meta])
    assert shown is not None
    assert shown.patient_id == anon("PID-77")
    for text in (shown.impression, shown.mentions[0].sentence, _finding(shown).read_text):
        assert "PID-77" not in text and "Doe" not in text
        assert "Old wedge fracture of T12" in text
