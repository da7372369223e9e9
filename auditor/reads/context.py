"""negspacy's NegEx with two changes to which phrases count as cues.

* negspacy 1.1 drops every cue that starts inside a pseudo phrase *or just after it*: in "im
  Vergleich zur Voraufnahme unverändert" the pseudo phrase "Voraufnahme" (a comparison, not a
  dating cue) hid the "unverändert" right after it. :class:`ScopedNegex` drops only the cues
  that start inside a pseudo phrase.
* A phrase that stands right before an entity of one of the ``claiming`` labels is about that
  entity, never a following cue of an entity before it: in "fracture of L1 with possible
  retropulsion" the "possible" doubts the retropulsion, not the fracture (but in "wedging of
  T12 versus normal variant" the "versus" still doubts the wedging).

Importing this module imports spaCy and registers the component as ``tlaudit_negex``; the
report parser imports it when it builds its pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

from negspacy.negation import Negex
from negspacy.termsets import termset
from spacy.language import Language
from spacy.tokens import Doc

FACTORY = "tlaudit_negex"

_Match = tuple[int, int, int]


class ScopedNegex(Negex):
    """NegEx whose pseudo phrases hide the cues that start inside them, and no others, and
    whose following phrases do not count right before an entity."""

    def __init__(
        self,
        nlp: Language,
        name: str,
        neg_termset: dict[str, list[str]],
        ent_types: list[str] | None = None,
        extension_name: str = "negex",
        chunk_prefix: list[str] | None = None,
        span_keys: list[str] | None = None,
        claiming: Sequence[str] = (),
    ) -> None:
        super().__init__(nlp, name, neg_termset, ent_types, extension_name, chunk_prefix, span_keys)
        self.claiming = frozenset(claiming)

    def process_negations(self, doc: Doc) -> tuple[list[_Match], list[_Match], list[_Match]]:
        """The preceding, following and terminating phrases of ``doc``, less those that start
        inside a pseudo phrase and the following ones that an entity follows at once."""
        kinds = {"Preceding": 0, "Following": 1, "Termination": 2}
        found: tuple[list[_Match], list[_Match], list[_Match]] = ([], [], [])
        matches = self.matcher(doc)
        strings = self.nlp.vocab.strings
        pseudo = [(start, end) for key, start, end in matches if strings[key] == "pseudo"]
        entity_starts = {entity.start for entity in doc.ents if entity.label_ in self.claiming}
        for key, start, end in matches:
            kind = kinds.get(strings[key])
            if kind is None or any(a <= start < b for a, b in pseudo):
                continue
            if kind == 1 and end in entity_starts:
                continue
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
            "claiming": [],
        },
    )(ScopedNegex)
