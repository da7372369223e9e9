"""How fast the report parser reads reports: ``tlaudit bench --reads N``.

The parser runs in one thread, so one process measures one core. The reports are the synthetic
world's (:func:`auditor.synth.reports.report_world`: one to six sentences in one of five
languages). Both the wall time and the process's CPU time are measured (on a busy machine the
CPU time is the fairer figure), once with the parser's sentence memory (recurring sentences read
once, as in use) and once without it (every sentence read by the NLP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from auditor.reads.text import SENTENCE_MEMORY, ReportParser


@dataclass(frozen=True)
class ParseSpeed:
    """Reports parsed per second, by wall clock and by CPU time."""

    reports: int
    memory: int  # the parser's sentence memory (0: none)
    wall_s: float
    cpu_s: float

    @property
    def per_wall_second(self) -> float:
        return self.reports / self.wall_s if self.wall_s else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.reports / self.cpu_s if self.cpu_s else 0.0

    def line(self) -> str:
        memory = f"sentence memory {self.memory}" if self.memory else "no sentence memory"
        return (
            f"{self.reports} reports ({memory}): {self.per_wall_second:,.0f} per second "
            f"(wall), {self.per_cpu_second:,.0f} per CPU second"
        )


def measure_parse_speed(n: int = 5000, seed: int = 0) -> tuple[ParseSpeed, ParseSpeed]:
    """Time :meth:`ReportParser.parse_many` on ``n`` synthetic reports of world ``seed``, with
    and without the sentence memory; the spaCy pipeline is built before the clock starts."""
    from auditor.synth.reports import report_world

    texts = [case.report.text for case in report_world(seed, n)]
    results = []
    for memory in (SENTENCE_MEMORY, 0):
        parser = ReportParser(memory=memory)
        parser.parse("Keine Fraktur.")  # builds the spaCy pipeline before the clock starts
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in parser.parse_many(texts):
            pass
        results.append(ParseSpeed(n, memory, time.perf_counter() - wall, time.process_time() - cpu))
    return results[0], results[1]
