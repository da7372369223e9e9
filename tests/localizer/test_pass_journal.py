"""The localizer pass's journal (``localizer_boxes.journal.jsonl``): a result reads back as it was
written, and a line that does not parse, torn by a kill or edited, is passed over (its image is
localized again) rather than read as something else."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.localizer.archive import _read_journal, _result_json
from auditor.localizer.infer import LocalizerResult
from auditor.records import VertebraBox
from auditor.vocab import Level


def _result(out: bool) -> LocalizerResult:
    box = VertebraBox(
        1, "", "", Level.L1, 10.0, 20.0, 60.5, 70.25, source="localizer", confidence=0.9
    )
    return LocalizerResult((box,), (), "sacrum", 0.8, "", 1.25, out)


def test_results_read_back_and_bad_lines_are_passed_over(tmp_path: Path) -> None:
    journal = tmp_path / "localizer_boxes.journal.jsonl"
    good = {"image": "a.dcm", "result": _result_json(_result(False))}
    flagged = {"image": "b.dcm", "result": _result_json(_result(True))}
    edited = {
        "image": "c.dcm",
        "result": {**_result_json(_result(False)), "out_of_distribution": "no"},
    }
    lines = [json.dumps(good), json.dumps(flagged), json.dumps(edited), json.dumps(good)[:40]]
    journal.write_text("\n".join(lines), encoding="utf-8")
    found = _read_journal(journal)
    assert set(found) == {"a.dcm", "b.dcm"}  # the edited line and the torn one are passed over
    assert found["a.dcm"] == _result(False)
    assert found["b.dcm"].out_of_distribution is True
