"""negspacy's NegEx, with a pseudo phrase that ends where a cue begins no longer hiding that cue.

negspacy 1.1 drops every cue that starts inside a pseudo phrase *or just after it*: in
"im Vergleich zur Voraufnahme unverändert" the pseudo phrase "Voraufnahme" (a comparison, not a
dating cue) hid the "unverändert" right after it. :class:`ScopedNegex` drops only the cues that
start inside a pseudo phrase. Importing this module imports spaCy and registers the component
as ``tlaudit_negex``; the report parser imports it when it builds its pipeline.
"""

from __future__ import annotations

from negspacy.negation import Negex
from negspacy.termsets import termset
from spacy.language import Language
from spacy.tokens import Doc

FACTORY = "tlaudit_negex"

_Match = tuple[int, int, int]


class ScopedNegex(Negex):
    """NegEx whose pseudo phrases hide the cues that start inside them, and no others."""

    def process_negations(self, doc: Doc) -> tuple[list[_Match], list[_Match], list[_Match]]:
        """The preceding, following and terminating phrases of ``doc``, less those that start
        inside a pseudo phrase."""
        kinds = {"Preceding": 0, "Following": 1, "Termination": 2}
        found: tuple[list[_Match], list[_Match], list[_Match]] = ([], [], [])
        matches = self.matcher(doc)
        strings = self.nlp.vocab.strings
        pseudo = [(start, end) for key, start, end in matches if strings[key] == "pseudo"]
        for key, start, end in matches:
            kind = kinds.get(strings[key])
            if kind is not None and not any(a <= start < b for a, b in pseudo):
                found[kind].append((key, start, end))
        return found


if not Language.has_factory(FACTORY):
    Language.factory(
        FACTORY,
        default_config={
            "neg_termset": termset("en").get_patterns(),
            "ent_types": None,
            "extension_name": "negex",
            "chunk_prefix": None,
            "span_keys": None,
        },
    )(ScopedNegex)
