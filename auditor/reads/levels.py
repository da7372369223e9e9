"""The vertebral levels a report text names, as radiologists write them.

``L1``, ``L 1``, ``LWK 1``, ``BWK-12``, ``Th12``, ``D12`` (dorsal = thoracic), ``1. LWK``,
``Lendenwirbelkörper 1``, ``the fourth lumbar vertebra``, ``erster Lendenwirbel``,
``première vertèbre lombaire``; ranges (``T12-L2``, ``T11 through L1``, ``BWK 11 bis LWK 1``,
``L1-3``) expand to every level between; lists (``T12/L1``, ``LWK 1 und 2``, ``L1, 2 and 3``)
name each. The prefixes, region words, ordinals and connecting words come from the report rules
(:mod:`auditor.reads.rules`); levels outside T1..L5 and S1 (cervical, S2..S5) are not kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.reads.rules import ReportRules
from auditor.vocab import SPINE_LEVELS

#: The highest number of each region's levels (S counts only S1).
_REGION_MAX = {"T": 12, "L": 5, "S": 1}
#: No unit may follow a level's number ("L 5 mm" names no level).
_NOT_A_UNIT = r"(?!\w|[.,]\d|\s?(?:%|mm|cm|°))"


def term_pattern(term: str) -> str:
    """A regular expression for one word-list term of the rules: ``*`` at a word's start or end
    stands for any letters, a ``*`` alone for one to three words ("loss of * height"), a space
    for any white space."""
    parts = []
    for word in term.split():
        if word == "*":
            parts.append(r"[^\W\d_]+(?:\s+[^\W\d_]+){0,2}")  # words, not "L1"
            continue
        core = word.strip("*") or word
        lead = r"\w*" if word.startswith("*") and len(word) > 1 else ""
        trail = r"\w*" if word.endswith("*") and len(word) > 1 else ""
        parts.append(lead + re.escape(core) + trail)
    return r"\s+".join(parts)


def alternatives(terms: tuple[str, ...] | list[str]) -> str:
    """A group matching any of ``terms``, longest first (a group that never matches for none)."""
    ordered = sorted(set(terms), key=lambda term: (-len(term), term))
    return "(?:" + ("|".join(term_pattern(term) for term in ordered) or r"(?!x)x") + ")"


def alternation(terms: tuple[str, ...] | list[str]) -> str:
    """:func:`alternatives`, each term bounded by non-word characters where it starts or ends
    with a word character (so ``-`` and ``/`` join ``L1-3`` and ``L1/2``). The terms bounded at
    both ends share one pair of bounds, which makes a long list several times faster to search
    and matches the same (the engine backtracks into the group when a bound fails)."""
    ordered = sorted(set(terms), key=lambda term: (-len(term), term))

    def word(char: str) -> bool:
        return char.isalnum() or char in "*_"

    both = [term for term in ordered if word(term[0]) and word(term[-1])]
    parts = []
    if both:
        parts.append(r"(?<!\w)" + _by_first_letter(both) + r"(?!\w)")
    parts += [
        ("(?<!\\w)" if word(term[0]) else "")
        + term_pattern(term)
        + ("(?!\\w)" if word(term[-1]) else "")
        for term in ordered
        if not (word(term[0]) and word(term[-1]))
    ]
    return "(?:" + ("|".join(parts) or r"(?!x)x") + ")"


def _by_first_letter(terms: list[str]) -> str:
    """A group matching any of ``terms``, the terms that start with a letter gathered under
    their first letter: the engine then tries at each position only the terms of the letter it
    finds there, not all of them (several times faster on the long word lists)."""
    buckets: dict[str, list[str]] = {}
    for term in terms:
        pattern = term_pattern(term)
        first = term[0].lower()
        key = first if first.isalpha() and pattern[0].lower() == first else ""
        buckets.setdefault(key, []).append(pattern[1:] if key else pattern)
    branches = [
        (re.escape(key) if key else "") + "(?:" + "|".join(rests) + ")"
        for key, rests in buckets.items()
    ]
    return "(?:" + "|".join(branches) + ")"


@dataclass(frozen=True)
class LevelSpan:
    """Levels named at ``text[start:end]``, cranial to caudal."""

    start: int
    end: int
    levels: tuple[str, ...]


class LevelFinder:
    """Finds the levels a (folded, see :func:`~auditor.reads.rules.fold`) text names."""

    def __init__(self, rules: ReportRules) -> None:
        self._region_of: dict[str, str] = {}
        for region, prefixes in rules.prefixes.items():
            for prefix in prefixes:
                self._region_of[prefix.lower()] = region
        self._nouns = [
            (re.compile(term_pattern(noun), re.I), r) for noun, r in rules.region_nouns.items()
        ]
        self._regions = {word.lower(): region for word, region in rules.regions.items()}
        self._ordinals = [
            (re.compile(term_pattern(word), re.I), n) for word, n in rules.ordinals.items()
        ]
        prefix = alternatives(tuple(self._region_of))
        noun = alternation(tuple(rules.region_nouns))
        regions = alternation(tuple(rules.regions))
        ordinal = alternation(tuple(rules.ordinals))
        vertebra = alternation(rules.words["vertebra"])
        filler = alternation(rules.words["filler"])
        range_words = alternation(rules.words["range_words"])
        list_words = alternation(rules.words["list_words"])
        # "the second and third lumbar vertebrae", "de la deuxième à la quatrième vertèbre lombaire"
        joiner = rf"\s*(?:,|{list_words}|{range_words})\s*(?:{filler}\s+)*"
        self._ordinal_word = re.compile(ordinal, re.I)
        self._joiner = re.compile(joiner, re.I)
        atoms = [
            rf"(?P<dot>\d{{1,2}})\.\s?(?P<dot_noun>{noun})",
            rf"(?P<ord>{ordinal}(?:{joiner}{ordinal})*)\s+(?:{vertebra}\s+)?"
            rf"(?P<ord_region>{regions})(?:\s+{vertebra})?",
            rf"(?P<ord2>{ordinal}(?:{joiner}{ordinal})*)\s+(?P<ord_noun>{noun})",
            rf"(?<![\w.])(?P<prefix>{prefix})[ \-]?(?P<num>\d{{1,2}}){_NOT_A_UNIT}",
            rf"(?P<noun>{noun})[ \-]?(?P<noun_num>\d{{1,2}}){_NOT_A_UNIT}",
        ]
        self._atom = re.compile("|".join(f"(?:{atom})" for atom in atoms), re.I)
        self._continuation = re.compile(
            rf"\s*(?:(?P<range>{range_words})|(?P<list>,|{list_words}))\s*"
            rf"(?P<n>\d{{1,2}}){_NOT_A_UNIT}",
            re.I,
        )
        # "T11 through the first lumbar vertebra": filler words may follow the range word
        self._range_word = re.compile(range_words, re.I)
        self._range_between = re.compile(rf"\s*(?:{range_words})\s*(?:{filler}\s+)*", re.I)

    def search(self, text: str) -> bool:
        """True when ``text`` may name a level (a quick test before the full parse)."""
        return self._atom.search(text) is not None

    def find(self, text: str) -> list[LevelSpan]:
        """Every level span of ``text`` in order; a range between two atoms is one span."""
        atoms: list[LevelSpan] = []
        position = 0
        while (match := self._atom.search(text, position)) is not None:
            position = match.end()
            words = match.group("ord") or match.group("ord2")
            if words is not None and not self._ordinal(words):  # several ordinals
                listed = self._ordinal_list(match, words)
                if listed is not None:
                    atoms.append(listed)
                continue
            region, number = self._read_atom(match)
            if region is None or not 1 <= number <= _REGION_MAX[region]:
                continue
            levels = [f"{region}{number}"]
            end = match.end()
            while (more := self._continuation.match(text, end)) is not None:
                n = int(more.group("n"))
                if not 1 <= n <= _REGION_MAX[region]:
                    break
                if more.group("range") is not None:
                    levels += [f"{region}{k}" for k in range(number + 1, n + 1)]
                else:
                    levels.append(f"{region}{n}")
                number, end = n, more.end()
            atoms.append(LevelSpan(match.start(), end, _ordered(levels)))
            position = end
        return self._join_ranges(text, atoms)

    def _ordinal_list(self, match: re.Match[str], words: str) -> LevelSpan | None:
        """The levels of "the second and third lumbar vertebrae", "erster bis dritter LWK": every
        ordinal named, and those between two joined by a range word; None where one is out of
        its region's range."""
        region = (
            self._regions.get(match.group("ord_region").lower())
            if match.group("ord") is not None
            else self._noun_region(match.group("ord_noun"))
        )
        if region is None:
            return None
        numbers: list[int] = []
        ranged = False
        for word in self._ordinal_word.finditer(words):
            n = self._ordinal(word.group())
            if not 1 <= n <= _REGION_MAX[region]:
                return None
            if ranged and numbers:
                numbers += range(numbers[-1] + 1, n)
            numbers.append(n)
            joiner = self._joiner.match(words, word.end())
            ranged = joiner is not None and self._range_word.search(joiner.group()) is not None
        levels = _ordered([f"{region}{n}" for n in numbers])
        return LevelSpan(match.start(), match.end(), levels)

    def _read_atom(self, match: re.Match[str]) -> tuple[str | None, int]:
        groups = match.groupdict()
        if groups["prefix"] is not None:
            return self._region_of.get(groups["prefix"].lower()), int(groups["num"])
        if groups["noun"] is not None:
            return self._noun_region(groups["noun"]), int(groups["noun_num"])
        if groups["dot"] is not None:
            return self._noun_region(groups["dot_noun"]), int(groups["dot"])
        if groups["ord"] is not None:
            return self._regions.get(groups["ord_region"].lower()), self._ordinal(groups["ord"])
        return self._noun_region(groups["ord_noun"]), self._ordinal(groups["ord2"])

    def _noun_region(self, word: str) -> str | None:
        return next((region for pattern, region in self._nouns if pattern.fullmatch(word)), None)

    def _ordinal(self, word: str) -> int:
        return next((n for pattern, n in self._ordinals if pattern.fullmatch(word)), 0)

    def _join_ranges(self, text: str, atoms: list[LevelSpan]) -> list[LevelSpan]:
        joined: list[LevelSpan] = []
        for atom in atoms:
            if joined and self._range_between.fullmatch(text, joined[-1].end, atom.start):
                first, last = joined[-1].levels[-1], atom.levels[0]
                low, high = sorted((SPINE_LEVELS.index(first), SPINE_LEVELS.index(last)))
                levels = (*joined[-1].levels, *SPINE_LEVELS[low : high + 1], *atom.levels)
                joined[-1] = LevelSpan(joined[-1].start, atom.end, _ordered(levels))
            else:
                joined.append(atom)
        return joined


def _ordered(levels: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(levels), key=SPINE_LEVELS.index))
