"""tlaudit's report rules: the words and phrases the report parser looks for, as data.

The rules ship as ``report_rules.json`` beside this module; a user adds words, phrases or a whole
language with a file of the same shape (``tlaudit scan --reads-rules FILE``, also
``parse-reads``), without editing code. Every list of an added file is appended to the shipped
one, every mapping updated. Layout::

    {"format": "tlaudit-report-rules", "version": 1,
     "levels": {"prefixes": {"T": ["T", "Th", "D", "BWK"], "L": [...], "S": [...]}},
     "languages": {"en": {<language keys>}, "de": {...}, ...}}

Keys of a language (each optional in an added file):

* ``regions`` (adjective -> ``T``/``L``/``S``), ``region_nouns`` (a noun that names the region,
  e.g. ``LWK``, ``lendenwirbel*``), ``ordinals`` (word -> number), ``vertebra`` (vertebra words
  for "the fourth lumbar vertebra"), ``range_words`` and ``list_words`` (between two levels),
  ``filler`` (words that may stand in a list of levels, such as "the" or "vertebral body");
* word lists found anywhere in a sentence: ``fracture`` (a fracture word: fracture, wedge,
  Sinterung, tassement...), ``doubtful`` (a fracture word that holds its own doubt, read as
  uncertain: Frakturverdacht), ``treated`` (a treated fracture, read as old: vertebroplasty),
  ``injury`` (counts only when negated: "no osseous injury"), ``other`` (something else than a
  fracture that a fracture word may be part of or stand beside: "disc height loss",
  "Höhenminderung des Bandscheibenfachs", "posterior wall involvement"; never a mention, it wins
  over a fracture word it overlaps, and a cue about it stays with it: "posterior wall
  involvement cannot be excluded"),
  ``normal`` (a level said to be normal: intact, unauffällig; read as negated), ``height``
  (with a ``normal`` word and no level: "vertebral body heights are maintained", read as a
  study-wide negation), ``spine`` (the whole spine or all its bodies, which a ``normal`` word
  with no level also negates study-wide: "unremarkable thoracolumbar spine", "unauffällige
  LWS", "intact vertebral bodies"), ``normal_exclusions`` (a ``normal`` word next to one of
  these is about something else: alignment, discs) and ``elsewhere`` (other, elsewhere,
  weitere, autre: a negation with one of these is study-wide even where every level its
  sentence names is negated, "L1 intact, no fracture elsewhere");
* cue phrases, each with ``preceding``, ``following`` and ``pseudo`` lists as NegEx has them:
  ``negated``, ``uncertain``, ``old`` and ``acute`` (acute overrides old);
* ``termination`` (words that end a cue's scope: but, jedoch, mais), ``sections``,
  ``skip_sections`` (report headings; the text after a skipped one, such as "Indication:", is
  not read up to the next heading or the end of its line) and ``brief_sections`` (headings
  whose text is one sentence, such as "Comparison:" or "Technik:": not read up to the end of
  that sentence, so a one-line report goes on being read after it), ``abbreviations`` (no
  sentence ends after these).

Matching ignores case and accents (:func:`fold`), and German "ß" matches "ss". In the word
lists a ``*`` at the start or end of a word stands for any letters, a ``*`` alone for one to
three words of letters and a space for any white space; cue phrases are matched token by token.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from auditor.errors import InputFileError

RULES_FORMAT = "tlaudit-report-rules"
RULES_VERSION = 1
SHIPPED_RULES = "report_rules.json"

#: Word lists of a language (found anywhere in a sentence, with ``*`` wildcards).
WORD_KEYS = (
    "fracture",
    "doubtful",
    "treated",
    "injury",
    "other",
    "normal",
    "height",
    "spine",
    "normal_exclusions",
    "elsewhere",
    "vertebra",
    "filler",
    "range_words",
    "list_words",
)
#: Cue kinds, each with preceding, following and pseudo phrases.
CUE_KEYS = ("negated", "uncertain", "old", "acute")
CUE_PARTS = ("preceding", "following", "pseudo")
PHRASE_KEYS = ("termination", "skip_sections", "brief_sections", "sections", "abbreviations")
MAP_KEYS = ("regions", "region_nouns", "ordinals")
_LANGUAGE_KEYS = frozenset((*WORD_KEYS, *CUE_KEYS, *PHRASE_KEYS, *MAP_KEYS))
REGIONS = ("T", "L", "S")


def _fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x80, 0x250):
        char = chr(code)
        base = unicodedata.normalize("NFD", char)
        if len(base) > 1 and base[0].isascii() and base[0].isalpha():
            table[code] = base[0]
    for chars, to in (
        ("\u2018\u2019\u201a\u201b\u00b4\u0060", "'"),
        ("\u201c\u201d\u201e\u00ab\u00bb", '"'),
    ):
        for char in chars:
            table[ord(char)] = to
    for char in "\u2010\u2011\u2012\u2013\u2014\u2212":
        table[ord(char)] = "-"
    for char in "\u00a0\u2007\u202f\t\f\v":
        table[ord(char)] = " "
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """``text`` with accents taken off letters, typographic quotes and dashes made plain and
    white space other than line ends made a space: the same length, character for character, so
    that offsets found in the folded text point into the original."""
    return text.translate(_FOLD)


@dataclass(frozen=True)
class CueSet:
    """One kind of cue (negation, uncertainty, history or acuity), as NegEx holds them."""

    preceding: tuple[str, ...]
    following: tuple[str, ...]
    pseudo: tuple[str, ...]


@dataclass(frozen=True)
class ReportRules:
    """Every language's rules merged (a report may mix languages), folded and deduplicated.

    ``sources`` names the files the rules came from, shipped file first.
    """

    prefixes: Mapping[str, tuple[str, ...]]  # "T" -> ("T", "Th", "D", ...)
    regions: Mapping[str, str]
    region_nouns: Mapping[str, str]
    ordinals: Mapping[str, int]
    words: Mapping[str, tuple[str, ...]]  # WORD_KEYS
    cues: Mapping[str, CueSet]  # CUE_KEYS
    termination: tuple[str, ...]
    skip_sections: tuple[str, ...]
    brief_sections: tuple[str, ...]
    sections: tuple[str, ...]
    abbreviations: tuple[str, ...]
    languages: tuple[str, ...]
    sources: tuple[str, ...]


def load_rules(extra: Sequence[Path] = ()) -> ReportRules:
    """The shipped rules, extended by each file of ``extra`` in order.

    Raises
    ------
    InputFileError
        When a file is missing, not JSON, not a rules file, or holds a key or value of the wrong
        kind (the message names the file and the key).
    """
    shipped = resources.files("auditor.reads").joinpath(SHIPPED_RULES).read_text(encoding="utf-8")
    documents = [(SHIPPED_RULES, _checked(json.loads(shipped), SHIPPED_RULES))]
    for path in extra:
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError as err:
            raise InputFileError(f"report rules file {path} does not exist") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputFileError(f"report rules file {path} cannot be read as JSON: {err}") from err
        documents.append((str(path), _checked(document, str(path))))
    return _merge(documents)


def _checked(document: Any, name: str) -> dict[str, Any]:
    """``document`` when it is a rules file of the expected shape; else an InputFileError."""

    def bad(where: str, expected: str) -> InputFileError:
        return InputFileError(f"report rules file {name}: {where} must be {expected}")

    if not isinstance(document, dict) or document.get("format") != RULES_FORMAT:
        raise InputFileError(
            f"report rules file {name} is not a tlaudit rules file "
            f'(expected "format": "{RULES_FORMAT}")'
        )
    if document.get("version", RULES_VERSION) != RULES_VERSION:
        raise bad("version", str(RULES_VERSION))
    prefixes = document.get("levels", {}).get("prefixes", {})
    if not isinstance(prefixes, dict) or set(prefixes) - set(REGIONS):
        raise bad("levels.prefixes", 'a mapping of "T", "L" and "S" to lists of prefixes')
    for region, items in prefixes.items():
        if not _strings(items):
            raise bad(f"levels.prefixes.{region}", "a list of strings")
    languages = document.get("languages", {})
    if not isinstance(languages, dict):
        raise bad("languages", "a mapping of language codes to rules")
    for code, language in languages.items():
        if not isinstance(language, dict):
            raise bad(f"languages.{code}", "a mapping")
        unknown = set(language) - _LANGUAGE_KEYS
        if unknown:
            raise bad(
                f"languages.{code}",
                f"made of the keys {', '.join(sorted(_LANGUAGE_KEYS))} "
                f"(found {', '.join(sorted(unknown))})",
            )
        for key in (*WORD_KEYS, *PHRASE_KEYS):
            if key in language and not _strings(language[key]):
                raise bad(f"languages.{code}.{key}", "a list of strings")
        for key in CUE_KEYS:
            cue = language.get(key, {})
            if not isinstance(cue, dict) or set(cue) - set(CUE_PARTS):
                raise bad(f"languages.{code}.{key}", f"a mapping of {', '.join(CUE_PARTS)}")
            for part, items in cue.items():
                if not _strings(items):
                    raise bad(f"languages.{code}.{key}.{part}", "a list of strings")
        for key in ("regions", "region_nouns"):
            mapping = language.get(key, {})
            if not isinstance(mapping, dict) or set(mapping.values()) - set(REGIONS):
                raise bad(f"languages.{code}.{key}", 'a mapping of words to "T", "L" or "S"')
        ordinals = language.get("ordinals", {})
        if not isinstance(ordinals, dict) or not all(
            isinstance(v, int) and 1 <= v <= 12 for v in ordinals.values()
        ):
            raise bad(f"languages.{code}.ordinals", "a mapping of words to numbers 1-12")
    return document


def _strings(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(item, str) and item.strip() for item in items)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(fold(item).strip() for item in items))


def _spellings(items: list[str], code: str) -> list[str]:
    """A language's terms with their twins in the other German spelling of "ss": "ß" written
    "ss" in every language, and in German ("de", "de-CH"...) each "ss" also written "ß" (reports
    write "auszuschließen", the rules and Swiss reports "auszuschliessen"; :func:`fold` keeps
    "ß", so that offsets stay put)."""
    twins = [item.replace("ß", "ss") for item in items if "ß" in item]
    if code.lower().startswith("de"):
        # each "ss" either way: "lässt sich nicht ausschließen" writes both
        for item in items:
            parts = re.split("ss", item, flags=re.I)
            if 1 < len(parts) <= 4:
                for joins in itertools.product(("ss", "ß"), repeat=len(parts) - 1):
                    if "ß" in joins:
                        tail = "".join(j + p for j, p in zip(joins, parts[1:], strict=True))
                        twins.append(parts[0] + tail)
            elif len(parts) > 4:
                twins.append("ß".join(parts))
    return [*items, *twins]


def _merge(documents: Sequence[tuple[str, dict[str, Any]]]) -> ReportRules:
    prefixes: dict[str, list[str]] = {region: [] for region in REGIONS}
    lists: dict[str, list[str]] = {key: [] for key in (*WORD_KEYS, *PHRASE_KEYS)}
    cues: dict[str, dict[str, list[str]]] = {k: {p: [] for p in CUE_PARTS} for k in CUE_KEYS}
    maps: dict[str, dict[str, Any]] = {key: {} for key in MAP_KEYS}
    languages: list[str] = []
    for _, document in documents:
        for region, items in document.get("levels", {}).get("prefixes", {}).items():
            prefixes[region] += items
        for code, language in document.get("languages", {}).items():
            languages.append(code)
            for key in lists:
                lists[key] += _spellings(language.get(key, []), code)
            for key in CUE_KEYS:
                for part, items in language.get(key, {}).items():
                    cues[key][part] += _spellings(items, code)
            for key in MAP_KEYS:
                maps[key].update({fold(k).lower(): v for k, v in language.get(key, {}).items()})
    return ReportRules(
        prefixes={region: _unique(items) for region, items in prefixes.items()},
        regions=maps["regions"],
        region_nouns=maps["region_nouns"],
        ordinals=maps["ordinals"],
        words={key: _unique(lists[key]) for key in WORD_KEYS},
        cues={key: CueSet(*(_unique(cues[key][part]) for part in CUE_PARTS)) for key in CUE_KEYS},
        termination=_unique(lists["termination"]),
        skip_sections=_unique(lists["skip_sections"]),
        brief_sections=_unique(lists["brief_sections"]),
        sections=_unique(lists["sections"]),
        abbreviations=_unique(lists["abbreviations"]),
        languages=tuple(dict.fromkeys(languages)),
        sources=tuple(name for name, _ in documents),
    )
