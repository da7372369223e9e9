"""The report parser on classes of phrasing, one sentence per mechanism that closes a class:
what each guards is the mechanism (a rule of the parser), not the sentence. The hand-written
table (tests/data/report_sentences.csv) measures how often the classes come up; these name them."""

from __future__ import annotations

import pytest

from auditor.reads.levels import LevelFinder
from auditor.reads.rules import fold, load_rules
from auditor.reads.text import ReportParser


@pytest.fixture(scope="module")
def parser() -> ReportParser:
    return ReportParser(memory=0)


def _read(parser: ReportParser, text: str) -> dict[str, str]:
    return {m.level: m.mention.value for m in parser.parse(text)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a phrase of one cue kind that holds a phrase of another is no cue of that other kind
        ("Fracture de L3 ne pouvant être exclue.", {"L3": "uncertain"}),
        ("A fracture of L1 can not be entirely ruled out.", {"L1": "uncertain"}),
        ("Compression fracture of L3, not present on prior.", {"L3": "affirmed"}),
        ("Aplastamiento de L3 no conocido previamente.", {"L3": "affirmed"}),
        ("Fraktur LWK 2, nicht frisch.", {"L2": "old"}),
        # a pseudo phrase hides the cues inside it, not the one right after it
        ("Höhenminderung LWK 3, im Vergleich zur Voraufnahme unverändert.", {"L3": "old"}),
        # German ß and ss are one spelling
        ("Fraktur von LWK 1 nicht auszuschließen.", {"L1": "uncertain"}),
        ("Fraktur von LWK 1 nicht auszuschliessen.", {"L1": "uncertain"}),
        # no sentence ends inside a spaced abbreviation
        ("Z. n. Fraktur LWK 2.", {"L2": "old"}),
        # the noun "Alter" (age) dates nothing
        ("Keilwirbel BWK 12, Alter nicht eindeutig bestimmbar.", {"T12": "affirmed"}),
        # inflected dating and doubting words, before and after the noun
        ("Aplastamientos crónicos de D11 y D12.", {"T11": "old", "T12": "old"}),
        ("Fratture di D11 e D12 pregresse.", {"T11": "old", "T12": "old"}),
        ("Éventuelles fractures de L2.", {"L2": "uncertain"}),
        ("Fraglicher Deckplatteneinbruch BWK 12.", {"T12": "uncertain"}),
        # what is said of something else than the fracture stays with it
        (
            "Kompressionsfraktur LWK 2, eine Hinterkantenbeteiligung ist nicht auszuschließen.",
            {"L2": "affirmed"},
        ),
        ("Osteochondrose L4/5 mit Höhenminderung des Bandscheibenfachs.", {}),
        ("Loss of disc height at L4/5.", {}),
        ("Disminución de altura del espacio discal L5-S1.", {}),
        # a cue right before a finding is about it, not about the finding before it
        ("Fracture of L1 with possible retropulsion.", {"L1": "affirmed"}),
        ("Frattura di L1 con possibile retropulsione.", {"L1": "affirmed"}),
        ("Anterior wedging of T12 versus normal variant.", {"T12": "uncertain"}),
        # doubt about the age is no doubt about the fracture
        ("L1 compression fracture, likely acute.", {"L1": "affirmed"}),
        ("Fraktur LWK 1, wahrscheinlich frisch.", {"L1": "affirmed"}),
        # adverbs inside a doubting phrase, and fracture words of osteoporosis
        ("A fracture of L2 cannot be confidently excluded.", {"L2": "uncertain"}),
        ("Une fracture de L1 ne peut être totalement exclue.", {"L1": "uncertain"}),
        ("Biconcave deformity of L2.", {"L2": "affirmed"}),
        ("Fischwirbel LWK 2.", {"L2": "affirmed"}),
        # a lone "*" in a word list stands for words, never for a level
        ("No reduction in vertebral body height.", {"*": "negated"}),
        ("L1 anterior height loss.", {"L1": "affirmed"}),
        ("Wedge compression of T12, of uncertain chronicity.", {"T12": "affirmed"}),
        ("Frattura di L1 di dubbia datazione.", {"L1": "affirmed"}),
        ("There is no significant interval change in the L3 compression fracture.", {"L3": "old"}),
        # doubt about the cause is no doubt about the fracture
        ("Cedimento di D12, di verosimile natura osteoporotica.", {"T12": "affirmed"}),
        ("Acuñamiento de D12 ya presente en el estudio previo.", {"T12": "old"}),
        # a segment of levels and one kind of cue words takes the finding before it, dated
        ("Fractures: L1 acute, T12 chronic.", {"L1": "affirmed", "T12": "old"}),
        ("Fracture récente de L1 et ancienne de D12.", {"L1": "affirmed", "T12": "old"}),
        ("Fractura aguda de L1 y antigua de D12.", {"L1": "affirmed", "T12": "old"}),
        ("Fracture of T11 and T12 cannot be excluded.", {"T11": "uncertain", "T12": "uncertain"}),
        ("Cement in the L1 vertebral body.", {"L1": "old"}),
        # study-wide statements about all the vertebral bodies
        ("Intact vertebral bodies.", {"*": "negated"}),
        ("Wirbelkörper regelrecht hoch.", {"*": "negated"}),
        ("Altezza dei soma vertebrali nei limiti.", {"*": "negated"}),
        # a "Comparison:" or "Technik:" heading holds one sentence, also in a one-line report
        ("Vergleich: Voraufnahme vom Mai. Keilwirbel BWK 12.", {"T12": "affirmed"}),
        ("Comparación: estudio de 2023. Aplastamiento de L2.", {"L2": "affirmed"}),
        # post-posed negation and doubt verbs
        ("Eine Sinterung von LWK 3 lässt sich nicht abgrenzen.", {"L3": "negated"}),
        ("Eine Deckplattenimpression LWK 2 zeigt sich nicht.", {"L2": "negated"}),
        ("Eine frische Fraktur LWK 4 lässt sich nicht sicher ausschließen.", {"L4": "uncertain"}),
        ("La frattura di L2 non è visibile.", {"L2": "negated"}),
        ("Le tassement de L2 n'est pas mis en évidence.", {"L2": "negated"}),
        ("Fractura de L2 no se evidencia.", {"L2": "negated"}),
        # vertebra plana in each language's spelling, micro- compounds of fracture nouns
        ("Vertèbres planes de D8 et D9.", {"T8": "affirmed", "T9": "affirmed"}),
        ("Microfractures of the L2 endplate.", {"L2": "affirmed"}),
        ("Microtassement de L3.", {"L3": "affirmed"}),
        ("Possibile microfrattura di L2.", {"L2": "uncertain"}),
        # a dating clause set off by commas is about the finding before it, not the one after
        (
            "Keilwirbel BWK 11, vorbekannt, und frische Fraktur LWK 2.",
            {"T11": "old", "L2": "affirmed"},
        ),
        (
            "Aplastamiento de D11, antiguo, y fractura aguda de L2.",
            {"T11": "old", "L2": "affirmed"},
        ),
        # a doubt after "but" outweighs a low probability before it
        ("Fracture of L3 unlikely, but not excluded.", {"L3": "uncertain"}),
        ("Frattura di L3 improbabile, ma non esclusa.", {"L3": "uncertain"}),
        # a negation beside levels that are all negated is about them, unless it says elsewhere
        ("LWK 1 und LWK 2 intakt, keine Fraktur.", {"L1": "negated", "L2": "negated"}),
        ("D12 e L1 integri, nessuna frattura.", {"T12": "negated", "L1": "negated"}),
        ("L1 intact; no fracture elsewhere.", {"*": "negated", "L1": "negated"}),
        # a recent or acute lesion, negated, is a study-wide negation
        ("Alte Fraktur LWK 1, keine frische Läsion.", {"*": "negated", "L1": "old"}),
        ("Fractura antigua de L1, sin lesiones agudas.", {"*": "negated", "L1": "old"}),
        # a cue in brackets after its level is about that level's finding only
        ("Fraktur BWK 12 (alt) und LWK 1 (frisch).", {"T12": "old", "L1": "affirmed"}),
        ("Tassement de D12 (ancien) et de L1 (récent).", {"T12": "old", "L1": "affirmed"}),
        # words that grade or single out a level in a list connect it like "and"
        ("Frattura di L1 e, in misura minore, di L2.", {"L1": "affirmed", "L2": "affirmed"}),
        ("Aplastamiento de L1 y, en menor medida, de L2.", {"L1": "affirmed", "L2": "affirmed"}),
    ],
)
def test_a_class_of_phrasing_is_read(
    parser: ReportParser, text: str, expected: dict[str, str]
) -> None:
    assert _read(parser, text) == expected


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("the second and third lumbar vertebrae", ("L2", "L3")),
        ("the first to third lumbar vertebrae", ("L1", "L2", "L3")),
        ("des ersten und zweiten Lendenwirbelkörpers", ("L1", "L2")),
        ("de la deuxième et de la troisième vertèbre lombaire", ("L2", "L3")),
        ("della seconda e terza vertebra lombare", ("L2", "L3")),
        ("de la segunda y tercera vértebras lumbares", ("L2", "L3")),
        ("the fourth lumbar vertebra", ("L4",)),
    ],
)
def test_lists_and_ranges_of_ordinals_name_each_level(text: str, levels: tuple[str, ...]) -> None:
    found = LevelFinder(load_rules()).find(fold(text))
    assert [span.levels for span in found] == [levels]
