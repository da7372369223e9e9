"""Free-text radiology reports for the synthetic world, with the truth of what each one says.

Each read of the world (:class:`~auditor.synth.study.ReadPlan`) gets a report in one of five
languages (English, German, French, Italian, Spanish), written sentence by sentence from the
phrase tables below: every reported level as an affirmed fracture, an old one or an uncertain one
(an over-called level is always uncertain), some levels named only to say they are intact (alone
or as a range), a study-wide "no fracture" for a read without fractures (and sometimes "no other
fracture" beside reported ones), with or without section headings, a clinical question that is
not a finding ("Indication: fall, fracture?") and sentences about something else. Levels are
written as the language's radiologists write them (``L1``, ``LWK 1``, ``BWK 12``, ``Th12``,
``D12``, "the first lumbar vertebra").

The truth of a report (:attr:`SynthReport.truth`) is the mention kind of every level it names,
``*`` for a study-wide statement: what a perfect parser would read. It never changes what the
structured columns say (the levels the text reports are the plan's reported levels).

The text is drawn from its own random stream, so adding reports changed no other draw of the
world. This module is the synthetic world's and does not use the parser it is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from auditor.synth.config import SynthConfig

LANGUAGES = ("en", "de", "fr", "it", "es")
_ORDER = tuple(f"T{n}" for n in range(1, 13)) + tuple(f"L{n}" for n in range(1, 6)) + ("S1",)

AFFIRMED, OLD, UNCERTAIN, NEGATED = "affirmed", "old", "uncertain", "negated"

#: One level's sentence per language and kind; ``{L}`` is the level.
_ONE: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        AFFIRMED: (
            "Acute compression fracture of {L}.",
            "Wedge compression fracture of {L} with about {P}% loss of height.",
            "Burst fracture of {L}.",
            "There is a fracture of {L}.",
            "{L}: superior endplate fracture.",
            "Fx {L}.",
            "Compression deformity of {L} consistent with acute fracture.",
        ),
        OLD: (
            "Old healed compression fracture of {L}.",
            "Chronic wedge deformity of {L}, unchanged.",
            "Known old fracture of {L}.",
            "Status post vertebroplasty of {L}.",
        ),
        UNCERTAIN: (
            "Possible compression fracture of {L}.",
            "Subtle fracture of {L} cannot be excluded.",
            "Questionable height loss at {L}; correlate with CT.",
            "Suspected fracture of {L}.",
        ),
        NEGATED: (
            "{L} is intact.",
            "No fracture of {L}.",
            "{L} vertebral body height is normal.",
        ),
    },
    "de": {
        AFFIRMED: (
            "Frische Kompressionsfraktur {L}.",
            "Keilwirbel {L}.",
            "Deckplattenimpressionsfraktur {L} mit Höhenminderung um {P}%.",
            "Berstungsfraktur {L}.",
            "Frische Fraktur des {L}.",
        ),
        OLD: (
            "Alte Deckplattenimpression {L}.",
            "Vorbekannte Fraktur {L}, unverändert.",
            "Ältere, konsolidierte Fraktur {L}.",
            "Zustand nach Kyphoplastie {L}.",
        ),
        UNCERTAIN: (
            "Fraglich Fraktur {L}.",
            "Verdacht auf Deckplattenimpression {L}.",
            "Eine Fraktur {L} ist nicht sicher auszuschließen.",
        ),
        NEGATED: (
            "{L} intakt.",
            "Keine Fraktur {L}.",
            "{L} ohne Höhenminderung.",
        ),
    },
    "fr": {
        AFFIRMED: (
            "Fracture-tassement récente de {L}.",
            "Tassement cunéiforme de {L}.",
            "Fracture de {L} avec perte de hauteur de {P} %.",
            "Fracture comminutive de {L}.",
        ),
        OLD: (
            "Tassement ancien de {L}.",
            "Fracture ancienne de {L}, connue.",
            "Séquelle de fracture de {L}.",
        ),
        UNCERTAIN: (
            "Possible tassement de {L}.",
            "Fracture de {L} non exclue.",
            "Suspicion de fracture de {L}.",
        ),
        NEGATED: (
            "{L} intact.",
            "Pas de fracture de {L}.",
            "Hauteur de {L} normale.",
        ),
    },
    "it": {
        AFFIRMED: (
            "Frattura da compressione di {L}.",
            "Cedimento somatico di {L}.",
            "Frattura a cuneo del soma di {L}.",
            "Frattura recente di {L} con riduzione di altezza del {P}%.",
        ),
        OLD: (
            "Frattura di vecchia data di {L}.",
            "Esiti di frattura di {L}.",
            "Cedimento di {L} già noto, invariato.",
        ),
        UNCERTAIN: (
            "Possibile frattura di {L}.",
            "Sospetta frattura di {L}.",
            "Non si può escludere frattura di {L}.",
        ),
        NEGATED: (
            "{L} integro.",
            "Non fratture di {L}.",
            "Altezza di {L} conservata.",
        ),
    },
    "es": {
        AFFIRMED: (
            "Fractura por aplastamiento de {L}.",
            "Fractura en cuña de {L}.",
            "Fractura estallido de {L}.",
            "Aplastamiento vertebral agudo de {L} con pérdida de altura del {P}%.",
        ),
        OLD: (
            "Fractura antigua de {L}.",
            "Aplastamiento crónico de {L}, sin cambios.",
            "Fractura conocida de {L}, consolidada.",
        ),
        UNCERTAIN: (
            "Posible fractura de {L}.",
            "No se descarta fractura de {L}.",
            "Sospecha de aplastamiento de {L}.",
        ),
        NEGATED: (
            "{L} íntegro.",
            "Sin fractura de {L}.",
            "Altura de {L} conservada.",
        ),
    },
}

#: Two affirmed levels in one sentence (``{A}``, ``{B}``).
_TWO_AFFIRMED = {
    "en": ("Compression fractures of {A} and {B}.", "Acute fractures at {A} and {B}."),
    "de": ("Frische Frakturen {A} und {B}.", "Keilwirbel {A} und {B}."),
    "fr": ("Fractures-tassements de {A} et {B}.",),
    "it": ("Fratture da compressione di {A} e {B}.",),
    "es": ("Fracturas por aplastamiento de {A} y {B}.",),
}
#: A range of intact levels (``{A}`` to ``{B}``).
_RANGE_NEGATED = {
    "en": ("{A} through {B} are intact.", "No fracture from {A} to {B}."),
    "de": ("{A} bis {B} intakt.",),
    "fr": ("Pas de fracture de {A} à {B}.",),
    "it": ("Non fratture da {A} a {B}.",),
    "es": ("Sin fracturas de {A} a {B}.",),
}
_NO_FRACTURE = {
    "en": ("No acute fracture.", "No fracture.", "No fracture or subluxation is seen."),
    "de": ("Keine Fraktur.", "Kein Frakturnachweis.", "Keine frische Fraktur."),
    "fr": ("Pas de fracture.", "Absence de fracture.", "Pas de tassement vertébral."),
    "it": ("Non fratture.", "Non evidenza di fratture.", "Non lesioni ossee traumatiche."),
    "es": ("Sin fracturas.", "No se observan fracturas.", "No hay fractura vertebral."),
}
_NO_OTHER = {
    "en": ("No other fracture.", "No further fractures."),
    "de": ("Keine weiteren Frakturen.",),
    "fr": ("Pas d'autre fracture.",),
    "it": ("Non altre fratture.",),
    "es": ("Sin otras fracturas.",),
}
_FILLER = {
    "en": ("Degenerative disc disease.", "Osteopenia.", "Normal alignment.", "Mild spondylosis."),
    "de": ("Degenerative Veränderungen.", "Osteopenie.", "Regelrechtes Alignement."),
    "fr": ("Discopathie dégénérative.", "Ostéopénie.", "Alignement conservé."),
    "it": ("Spondilosi.", "Osteopenia.", "Allineamento conservato."),
    "es": ("Cambios degenerativos.", "Osteopenia.", "Alineación conservada."),
}
_INDICATION = {
    "en": ("Indication: fall from height, fracture?", "Clinical history: back pain after fall."),
    "de": ("Fragestellung: Sturz, Fraktur?", "Indikation: Rückenschmerzen nach Sturz."),
    "fr": ("Indication : chute, fracture ?", "Renseignements cliniques : chute."),
    "it": ("Quesito clinico: trauma, frattura?",),
    "es": ("Motivo de consulta: caída, ¿fractura?",),
}
_HEADING = {
    "en": ("Findings:", "FINDINGS:"),
    "de": ("Befund:",),
    "fr": ("Résultat :",),
    "it": ("Referto:",),
    "es": ("Hallazgos:",),
}
#: The levels the world fractures.
_FRACTURABLE = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5")
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


@dataclass(frozen=True)
class SynthReport:
    """A report text, its language, and the mention kind of every level it names (``*`` for a
    study-wide statement), cranial to caudal with ``*`` first."""

    text: str
    language: str
    truth: tuple[tuple[str, str], ...]

    def truth_of(self, level: str) -> str:
        """The true mention of ``level`` (``none`` when the report does not name it)."""
        return dict(self.truth).get(level, "none")


def level_text(level: str, language: str, rng: np.random.Generator) -> str:
    """``level`` (``T12``, ``L1``, ``S1``) as a radiologist of ``language`` might write it."""
    region, number = level[0], int(level[1:])
    choice = float(rng.random())
    if language == "de" and region in "TL":
        noun = "BWK" if region == "T" else "LWK"
        if choice < 0.5:
            return f"{noun} {number}"
        if choice < 0.65:
            return f"{noun}{number}"
        if choice < 0.8 and region == "T":
            return f"Th{number}"
        return level
    if language in ("fr", "it", "es") and region == "T" and choice < 0.6:
        return f"D{number}"
    if language == "en" and region == "L" and choice < 0.12:
        return f"the {_ORDINALS[number]} lumbar vertebra"
    if choice > 0.9 and language != "en":
        return f"{region} {number}"
    return level


def write_report(
    in_view: tuple[str, ...],
    reported: tuple[str, ...],
    overcalled: tuple[str, ...],
    rng: np.random.Generator,
) -> SynthReport:
    """A report for a read that reports ``reported`` (levels, some of them over-called) on an
    image showing ``in_view``.

    Parameters
    ----------
    in_view
        The levels the image shows, cranial to caudal.
    reported
        The levels the read reports (the structured columns' ``reported_levels``).
    overcalled
        Those of ``reported`` that are not fractured (always written as uncertain).
    rng
        The report's own random stream.
    """
    language = str(rng.choice(LANGUAGES))
    pick = _picker(rng)

    def say(level: str) -> str:
        return level_text(level, language, rng)

    truth: dict[str, str] = {}
    sentences: list[str] = []

    kinds = {}
    for level in reported:
        if level in overcalled:
            kinds[level] = UNCERTAIN
        else:
            draw = float(rng.random())
            kinds[level] = AFFIRMED if draw < 0.72 else OLD if draw < 0.86 else UNCERTAIN
    affirmed = [level for level in reported if kinds[level] == AFFIRMED]
    if len(affirmed) >= 2 and rng.random() < 0.5:
        a, b = affirmed[:2]
        sentences.append(pick(_TWO_AFFIRMED[language]).format(A=say(a), B=say(b)))
        for level in (a, b):
            truth[level] = AFFIRMED
    for level in reported:
        if level in truth:
            continue
        percent = int(rng.integers(4, 12)) * 5
        sentences.append(pick(_ONE[language][kinds[level]]).format(L=say(level), P=percent))
        truth[level] = kinds[level]

    normal = [level for level in in_view if level not in reported and level != "S1"]
    if normal and rng.random() < 0.45:
        run = _run(normal, rng)
        if len(run) >= 2 and rng.random() < 0.5:
            sentence = pick(_RANGE_NEGATED[language]).format(A=say(run[0]), B=say(run[-1]))
            sentences.append(sentence)
            first, last = _ORDER.index(run[0]), _ORDER.index(run[-1])
            truth.update((level, NEGATED) for level in _ORDER[first : last + 1])
        else:
            level = run[0]
            sentences.append(pick(_ONE[language][NEGATED]).format(L=say(level), P=0))
            truth[level] = NEGATED
    if not reported:
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), pick(_NO_FRACTURE[language]))
        truth["*"] = NEGATED
    elif rng.random() < 0.35:
        sentences.append(pick(_NO_OTHER[language]))
        truth["*"] = NEGATED
    if rng.random() < 0.6:
        sentences.insert(int(rng.integers(0, len(sentences) + 1)), pick(_FILLER[language]))
    text = " ".join(sentences)
    if rng.random() < 0.5:
        text = f"{pick(_HEADING[language])} {text}"
    if rng.random() < 0.35:
        text = f"{pick(_INDICATION[language])}\n{text}"
    order = {level: k for k, level in enumerate(("*", *_ORDER))}
    return SynthReport(text, language, tuple(sorted(truth.items(), key=lambda t: order[t[0]])))


def _picker(rng: np.random.Generator) -> Callable[[tuple[str, ...]], str]:
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(0, len(options)))]

    return pick


def _run(levels: list[str], rng: np.random.Generator) -> list[str]:
    """A run of consecutive levels from ``levels`` (at most three), starting at a random one."""
    start = int(rng.integers(0, len(levels)))
    run = [levels[start]]
    for level in levels[start + 1 : start + 3]:
        if _ORDER.index(level) != _ORDER.index(run[-1]) + 1:
            break
        run.append(level)
    return run


@dataclass(frozen=True)
class ReportCase:
    """One report of :func:`report_world` with the read it was written for."""

    key: str
    in_view: tuple[str, ...]
    reported: tuple[str, ...]
    overcalled: tuple[str, ...]
    report: SynthReport


def report_world(seed: int, n: int, config: SynthConfig | None = None) -> Iterator[ReportCase]:
    """``n`` reports drawn as the world ``seed`` draws its reads, without drawing images: the
    field (4 to 9 levels between T8 and S1), fractures in 60 % of studies (a third of them with
    two or three), the config's miss and over-call rates. Cheap enough to measure the parser on
    thousands of reports (:mod:`auditor.reads.evaluate`)."""
    config = config or SynthConfig()
    levels = _ORDER[_ORDER.index("T8") :]
    for index in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, index, 70]))
        length = int(rng.integers(4, 10))
        start = int(rng.integers(0, len(levels) - length + 1))
        in_view = levels[start : start + length]
        candidates = [level for level in in_view if level in _FRACTURABLE]
        fractured: list[str] = []
        if candidates and rng.random() < config.fracture_study_rate:
            count = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
            picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
            fractured = [candidates[k] for k in sorted(picks)]
        overcalled: tuple[str, ...] = ()
        if not fractured:
            reported: tuple[str, ...] = ()
            if rng.random() < config.overcall_rate:
                overcalled = (str(rng.choice(in_view)),)
                reported = overcalled
        elif rng.random() < config.miss_rate:
            reported = tuple(fractured[1:]) if len(fractured) > 1 and rng.random() < 0.5 else ()
        else:
            reported = tuple(fractured)
        report = write_report(in_view, reported, overcalled, rng)
        yield ReportCase(f"R{seed}-{index:06d}", in_view, reported, overcalled, report)
