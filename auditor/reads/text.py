"""What a report's text says about a fracture at each level: affirmed, old, uncertain or negated.

:meth:`ReportParser.parse` reads one report in five steps:

1. **Sections and sentences.** Headings (``Findings:``, ``Befund:``, ``Conclusion :``) are taken
   out; the text after a heading of the rules' ``skip_sections`` (``Indication:``,
   ``Fragestellung:``) is not read up to the next heading or the end of its line, so a clinical
   question such as "fracture?" is never taken for a finding; after one of its
   ``brief_sections`` (``Comparison:``, ``Technik:``) only up to the end of its sentence.
   Sentences end at ``.``, ``!`` or ``?`` (not after an abbreviation of the rules, nor in
   German ``1. LWK``), at a blank line, and at a line break before a capital, a digit or a
   bullet.
2. **Only sentences that matter.** A sentence that names no level, no fracture word, no height
   and not the spine is skipped without running the NLP; this is what makes the parser fast.
3. **Targets.** In each remaining sentence: the levels (:mod:`auditor.reads.levels`) and the
   findings: fracture words (``FRACTURE``), treated fractures (``TREATED``, read as old),
   injury words (``INJURY``, counted only when negated), "normal" words (``NORMAL``, "L2
   intact", read as negated) and other things (``OTHER``, disc height loss, posterior wall
   involvement: never a mention; they win over a fracture word they overlap, and the cues
   about them stay with them). The sentence is cut
   into segments at commas, semicolons, the rules' termination words (but, jedoch, mais) and
   at "and" between two findings ("old fracture of T12 and new fracture of L1"); a segment
   with neither a level nor a finding joins the next, unless it is the words of one kind of
   cue only ("Schiacciamento di D7, di vecchia data, e frattura recente di D9"): that one
   joins the segment before it, and after a termination word ("unlikely, but not excluded")
   says what it says of that segment's findings although NegEx's scope ends at the word.
4. **Context.** negspacy's NegEx (as :class:`~auditor.reads.context.ScopedNegex`), one per cue
   kind on a blank spaCy pipeline with the rules' negation, uncertainty, history and acuity
   phrases, marks each finding negated, uncertain, old or acute within its segment; each runs
   only on a sentence that holds one of its preceding or following phrases (elsewhere it would
   mark nothing). A phrase of one cue kind that holds a phrase of another is no cue of that
   other kind ("cannot be excluded", "no se descarta" and "not present on prior" never negate;
   "nicht frisch" is old, not acute). A finding's mention is
   then ``negated`` if negated, else ``old`` if old and not acute (a treated fracture is old),
   else ``uncertain`` if uncertain, else ``affirmed``.
5. **Levels.** Each level takes the nearest finding of its segment. A segment of levels only
   ("..., L1 or L2") takes the finding of the segment before it (or, first in its sentence, of
   the one after it); one of levels and the words of one kind of cue ("L1 acute, T12 chronic";
   "fracture récente de L1 et ancienne de D12", cut at "et" before such a cue) takes it as
   that kind says. A finding that no level of its sentence took is a study-wide mention
   (level ``*``): "No fracture."; a "normal" word counts study-wide only beside a height word
   ("vertebral body heights are maintained") or a word for the whole spine ("unremarkable
   thoracolumbar spine"); where every level the sentence names is negated, none is study-wide
   unless it holds a word of the rules' ``elsewhere`` ("L4 and L5 of normal height, without
   fracture"; "L1 intact, no fracture elsewhere"). A doubted or dated finding in a segment
   without levels reaches back to the levels of the segment just before it where these took a
   plain, not acute finding or none ("loss of height of L3; a fracture cannot be excluded"). A
   level mentioned in several sentences keeps the most specific mention: old, then uncertain,
   then affirmed, then negated.

Levels outside the scan's T10..S1 (T1..T9) are kept. The parser never logs report text.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from auditor.reads.levels import LevelFinder, alternation
from auditor.reads.rules import ReportRules, fold, load_rules
from auditor.records import LevelMention
from auditor.vocab import SPINE_LEVELS, STUDY_WIDE, Mention

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc

#: Finding labels, strongest first (the first wins where two overlap: "sans lésion traumatique"
#: is a negated injury, not the "normal" words "sans lésion"; "disc height loss" is no fracture).
FINDING_LABELS = ("OTHER", "DOUBTFUL", "FRACTURE", "TREATED", "INJURY", "NORMAL")
#: Which mention wins where one level is mentioned in several sentences: the most specific.
_SPECIFICITY = {Mention.OLD: 0, Mention.UNCERTAIN: 1, Mention.AFFIRMED: 2, Mention.NEGATED: 3}
_LABEL_WORDS = {label: label.lower() for label in FINDING_LABELS}  # label -> word list
_TOKEN = re.compile(r"\w+|[^\w\s]")
#: Sentences a parser remembers with their mentions (reports repeat sentences such as "No acute
#: fracture."); the memory is emptied when full.
SENTENCE_MEMORY = 20_000
_EXTENSIONS = {kind: f"tlaudit_{kind}" for kind in ("negated", "uncertain", "old", "acute")}
#: What a segment of levels and cue words only says of the finding it takes.
_CUE_MENTION = {"old": Mention.OLD, "acute": Mention.AFFIRMED, "uncertain": Mention.UNCERTAIN}


@dataclass(frozen=True)
class _Finding:
    start: int  # token indices in the sentence's doc
    end: int
    label: str
    mention: Mention | None  # None: a finding that says nothing here (an un-negated injury word)
    acute: bool = False  # said to be acute or new


@dataclass(frozen=True)
class _Segment:
    start: int
    end: int
    levels: tuple[tuple[int, int, tuple[str, ...]], ...]  # token start, end, levels
    findings: tuple[_Finding, ...]
    pure: bool  # levels, connecting words and punctuation only
    # levels and the words of one kind of dating, acuity or doubt only ("T12 chronic"): it
    # takes the finding of the segment before it with its own kind
    cue: str | None
    # holds a "normal" word and a height word or one for the whole spine: it is study-wide
    whole: bool
    # holds no level and a word for the rest of the spine ("no other fracture", "keine weitere")
    elsewhere: bool = False


class ReportParser:
    """Parses report texts with one set of :class:`~auditor.reads.rules.ReportRules`.

    Building the spaCy pipeline takes about a second; it is built on the first parse and then
    reused, so parse many reports with one parser. The parser remembers the mentions of up to
    ``memory`` distinct sentences, so a sentence that recurs is read once (0: none).
    """

    def __init__(self, rules: ReportRules | None = None, memory: int = SENTENCE_MEMORY) -> None:
        self.rules = rules if rules is not None else load_rules()
        rules = self.rules
        self.levels = LevelFinder(rules)
        self._findings = [
            (label, re.compile(alternation(rules.words[key]), re.I))
            for label, key in _LABEL_WORDS.items()
        ]
        self._other = dict(self._findings)["OTHER"]
        self._height = re.compile(alternation(rules.words["height"]), re.I)
        self._spine = re.compile(alternation(rules.words["spine"]), re.I)
        self._exclusions = re.compile(alternation(rules.words["normal_exclusions"]), re.I)
        self._elsewhere = re.compile(alternation(rules.words["elsewhere"]), re.I)
        trigger = (
            *rules.words["doubtful"],
            *rules.words["fracture"],
            *rules.words["treated"],
            *rules.words["injury"],
        )
        self._trigger = re.compile(
            alternation((*trigger, *rules.words["height"], *rules.words["spine"])), re.I
        )
        self._termination = re.compile(alternation(rules.termination), re.I)
        self._list_words = re.compile(alternation(rules.words["list_words"]), re.I)
        filler = (*rules.words["filler"], *rules.words["list_words"], *rules.words["range_words"])
        self._filler = frozenset(token.lower() for term in filler for token in _TOKEN.findall(term))
        headings = alternation((*rules.sections, *rules.skip_sections, *rules.brief_sections))
        self._heading = re.compile(
            rf"(?P<colon>{headings})\s*:|^[ \t]*(?P<line>{headings})[ \t]*$", re.I | re.M
        )
        self._skip = re.compile(alternation(rules.skip_sections), re.I)
        self._brief = re.compile(alternation(rules.brief_sections), re.I)
        abbreviations = "|".join(
            re.escape(a).replace(r"\ ", r"\s?").replace(r"\.", r"\.\s?").removesuffix(r"\s?")
            for a in sorted(rules.abbreviations, key=len, reverse=True)
        )
        self._abbreviation = re.compile(rf"(?<![\w.])(?:{abbreviations})\Z", re.I)
        # "Z. n.", "V. a.", "p. ex.": no sentence ends at the inner period either
        heads = "|".join(
            rf"{re.escape(head)}(?=\s*{re.escape(tail)})"
            for a in rules.abbreviations
            for head, tail in _inner_splits(a)
        )
        self._abbreviation_head = re.compile(rf"(?<![\w.])(?:{heads or '(?!x)x'})", re.I)
        nouns = alternation((*rules.region_nouns, *rules.prefixes["T"], *rules.prefixes["L"]))
        self._ordinal_dot = re.compile(r"(?<![\w.])\d{1,2}\.\Z")
        self._level_dot = re.compile(rf"{nouns}[ \-]?\d{{1,2}}\.\Z", re.I)
        self._ordinal_noun = re.compile(rf"\s*{nouns}", re.I)
        self._end = re.compile(r"[.!?]+(?=\s|\Z)|\n[ \t]*\n|\n(?=[ \t]*(?:[A-Z0-9\-*\u2022]))")
        self._nlp: Language | None = None
        # first word -> (the phrase's words, its cue kind), of the phrases that mark a finding
        self._cue_phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._pipes: list[tuple[str, Callable[[Doc], Doc]]] = []  # cue kind -> its NegEx
        self._seen: dict[str, tuple[tuple[str, Mention], ...]] = {}
        self._memory = memory

    # -- public -----------------------------------------------------------------------------

    def parse(self, text: str) -> tuple[LevelMention, ...]:
        """The mentions of one report text: at most one per level (``*`` for study-wide), in
        level order (study-wide first)."""
        return next(self.parse_many([text]))

    def parse_many(self, texts: Iterable[str]) -> Iterator[tuple[LevelMention, ...]]:
        """:meth:`parse` for each text, in order."""
        for text in texts:
            folded = fold(text)
            found: list[LevelMention] = []
            for start, end in self.sentences(folded):
                said = self._sentence_mentions(folded[start:end])
                if said:
                    original = " ".join(text[start:end].split())
                    found += [LevelMention(level, mention, original) for level, mention in said]
            yield _merged(found)

    def sentences(self, folded: str) -> list[tuple[int, int]]:
        """The (start, end) offsets of the sentences to read in a folded text: headings taken
        out, skipped sections left out, each sentence stripped of surrounding white space."""
        pieces: list[tuple[int, int]] = []
        position = 0
        headings = list(self._heading.finditer(folded))
        for k, heading in enumerate(headings):
            pieces.append((position, heading.start()))
            position = heading.end()
            word = heading.group("colon") or heading.group("line") or ""
            brief = self._brief.fullmatch(word) is not None
            if brief or self._skip.fullmatch(word):
                line_end = folded.find("\n", position)
                stops = [len(folded) if line_end < 0 else line_end]
                if k + 1 < len(headings):
                    stops.append(headings[k + 1].start())
                if brief:  # "Comparison: radiographs of 2024. Unchanged ...": one sentence
                    stops.append(self._first_end(folded, position, min(stops)))
                position = max(position, min(stops))
        pieces.append((position, len(folded)))
        found: list[tuple[int, int]] = []
        for start, end in pieces:
            found += self._split(folded, start, end)
        return found

    # -- sentences --------------------------------------------------------------------------

    def _first_end(self, text: str, start: int, end: int) -> int:
        """The end of the first sentence of ``text[start:end]`` (``end`` where none ends)."""
        return next((b for _, b in self._split(text, start, end)), end)

    def _split(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        begin = start
        for match in self._end.finditer(text, start, end):
            if match.group().startswith((".", "!", "?")) and self._no_end(text, match, end):
                continue
            found.append((begin, match.end()))
            begin = match.end()
        found.append((begin, end))
        stripped = []
        for a, b in found:
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if b > a:
                stripped.append((a, b))
        return stripped

    def _no_end(self, text: str, match: re.Match[str], end: int) -> bool:
        """True where a period ends no sentence: after an abbreviation, or a German ordinal."""
        stop = match.start() + 1
        if self._abbreviation.search(text, max(0, stop - 16), stop):
            return True
        if any(
            head.end() == stop
            for head in self._abbreviation_head.finditer(text, max(0, stop - 16), end)
            if head.start() < stop
        ):
            return True
        return bool(
            self._ordinal_dot.search(text, max(0, stop - 4), stop)
            and self._ordinal_noun.match(text, stop, end)
            # "Fraktur LWK 3. LWK 5 intakt": the number closes a level, and the sentence
            and not self._level_dot.search(text, max(0, stop - 24), stop)
        )

    # -- one sentence -----------------------------------------------------------------------

    def _sentence_mentions(self, sentence: str) -> tuple[tuple[str, Mention], ...]:
        """The (level, mention) pairs of one folded sentence; none, without running the NLP,
        for a sentence that names no level, no fracture word and no height."""
        # Reports repeat their sentences ("No acute fracture."): each is read once per parser.
        found = self._seen.get(sentence)
        if found is None:
            relevant = self.levels.search(sentence) or self._trigger.search(sentence)
            found = self._read_sentence(sentence) if relevant else ()
            if len(self._seen) >= self._memory:
                self._seen.clear()
            if self._memory:
                self._seen[sentence] = found
        return found

    def _read_sentence(self, sentence: str) -> tuple[tuple[str, Mention], ...]:
        tokens = list(_TOKEN.finditer(sentence))
        words = [t.group() for t in tokens]
        starts = [t.start() for t in tokens]
        self._pipeline()  # its cue phrases tell which segments hold cue words only
        levels, findings, segments, tails = self._segments(sentence, words, starts)
        marks = self._marks(tokens, words, findings, segments)
        judged = [
            self._judged(segment, sentence, words, starts, levels, findings, marks, tails.get(k))
            for k, segment in enumerate(segments)
        ]
        return tuple(_bind(judged))

    def _marks(
        self,
        tokens: list[re.Match[str]],
        words: list[str],
        findings: list[tuple[int, int, str]],
        segments: list[tuple[int, int]],
    ) -> list[frozenset[str]]:
        """The cue kinds (negated, uncertain, old, acute) NegEx marks each finding with, the
        segments being its sentences. NegEx runs only for the cue kinds one of whose preceding
        or following phrases is in the sentence (without one it marks nothing), and no spaCy
        doc is built where there is none."""
        nlp = self._pipeline()
        present = self._cue_kinds([word.lower() for word in words]) if findings else set()
        pipes = [(kind, pipe) for kind, pipe in self._pipes if kind in present]
        if not pipes:
            return [frozenset()] * len(findings)
        from spacy.tokens import Doc, Span

        spaces = [
            k + 1 < len(tokens) and tokens[k + 1].start() > t.end() for k, t in enumerate(tokens)
        ]
        segment_starts = {a for a, _ in segments}
        doc = Doc(
            nlp.vocab,
            words=words,
            spaces=spaces,
            sent_starts=[k in segment_starts for k in range(len(words))],
        )
        doc.ents = [Span(doc, a, b, label=label) for a, b, label in findings]
        for _, pipe in pipes:
            doc = pipe(doc)
        return [
            frozenset(kind for kind, _ in pipes if getattr(ent._, _EXTENSIONS[kind]))
            for ent in doc.ents
        ]

    def _cue_kinds(self, lowered: list[str]) -> set[str]:
        """The cue kinds one of whose preceding or following phrases is in the words."""
        found: set[str] = set()
        for k, word in enumerate(lowered):
            for phrase, kind in self._cue_phrases.get(word, ()):
                if kind not in found and tuple(lowered[k : k + len(phrase)]) == phrase:
                    found.add(kind)
        return found

    def _segments(
        self, sentence: str, words: list[str], starts: list[int]
    ) -> tuple[
        list[tuple[int, int, tuple[str, ...]]],
        list[tuple[int, int, str]],
        list[tuple[int, int]],
        dict[int, str],
    ]:
        """The sentence's levels and findings (token start, end and levels or label, in order),
        the token ranges of the segments it is cut into, and the segments that end in a piece
        of one kind of cue words after a termination word ("..., mais non exclue"), with that
        kind."""

        def token(char: int) -> int:
            return bisect.bisect_left(starts, char)

        level_spans = self.levels.find(sentence)
        taken = [(s.start, s.end) for s in level_spans]
        found: list[tuple[int, int, str]] = []
        matches = {
            label: list(pattern.finditer(sentence))
            for label, pattern in self._findings
            if label != "OTHER"
        }
        # "other" words matter only beside a finding: looked for only where there is one
        if any(matches.values()):
            matches["OTHER"] = list(self._other.finditer(sentence))
        for label in FINDING_LABELS:
            for m in matches.get(label, ()):
                if all(m.end() <= a or m.start() >= b for a, b in taken):
                    found.append((m.start(), m.end(), label))
                    taken.append((m.start(), m.end()))
        found.sort()
        findings = [(token(a), token(b), label) for a, b, label in found]
        levels = [(token(s.start), token(s.end), s.levels) for s in level_spans]

        size = len(words)
        cuts = {0, size}
        # a comma between two levels lists them ("D10, D11 et D12, anciens"): no cut there
        level_ends = {end for _, end, _ in levels}
        level_starts = {start for start, _, _ in levels}
        cuts.update(
            k + 1
            for k, word in enumerate(words)
            if word == ";" or (word == "," and not (k in level_ends and k + 1 in level_starts))
        )
        cuts.update(token(m.start()) for m in self._termination.finditer(sentence))
        # a bracket is a piece of its own: "fractures of T12 (old) and L1 (new)"
        cuts.update(k + (word == ")") for k, word in enumerate(words) if word in "()")
        ranges = _ranges(sorted(cuts))
        finding_starts = [a for a, _, _ in findings]
        level_start_list = sorted(level_starts)
        in_level = {k for s, e, _ in levels for k in range(s, e)}
        split: list[tuple[int, int]] = []
        for a, b in ranges:
            for m in self._list_words.finditer(sentence, starts[a] if a < size else 0):
                at = token(m.start())
                if not a < at < b:
                    continue
                if _has(finding_starts, a, at) and (
                    _has(finding_starts, at, b)
                    # "fracture récente de L1 et ancienne de D12": a cue word first, then a level
                    or (
                        _has(level_start_list, at, b)
                        and self._first_word(words, at + 1, b) not in in_level
                        and self._cue_only(words, at, b, in_level)
                    )
                ):
                    split.append((a, at))
                    a = at
            split.append((a, b))
        targets = sorted(finding_starts + [s for s, _, _ in levels])
        merged: list[tuple[int, int]] = []
        tails: dict[int, str] = {}
        carry: int | None = None
        for a, b in split:
            start = a if carry is None else carry
            if _has(targets, a, b):
                merged.append((start, b))
                carry = None
            elif carry is None and merged and (tail := self._tail(sentence, words, starts, a, b)):
                # a piece of one kind of cue words is about the finding before it, not the one
                # after it: "Schiacciamento di D7, di vecchia data, e frattura recente di D9"
                merged[-1] = (merged[-1][0], b)
                kind, after_termination = tail
                if after_termination:
                    tails[len(merged) - 1] = kind
            else:
                carry = start
        if carry is not None:
            if merged:
                merged[-1] = (merged[-1][0], size)
            else:
                merged.append((carry, size))
        return levels, findings, merged, tails

    def _tail(
        self, sentence: str, words: list[str], starts: list[int], a: int, b: int
    ) -> tuple[str, bool] | None:
        """The cue kind of tokens ``a`` to ``b`` where they are the words of one kind of cue
        only (:meth:`_cue_only`), maybe after a termination word ("but not excluded", "di
        vecchia data"), and whether they follow one; None where they are not."""
        termination = self._termination.match(sentence, starts[a])
        k = bisect.bisect_left(starts, termination.end()) if termination else a
        kind = self._cue_only(words, k, b, set()) if k < b else None
        return None if kind is None else (kind, termination is not None)

    def _judged(
        self,
        segment: tuple[int, int],
        sentence: str,
        words: list[str],
        starts: list[int],
        levels: list[tuple[int, int, tuple[str, ...]]],
        findings: list[tuple[int, int, str]],
        marks: list[frozenset[str]],
        tail: str | None = None,
    ) -> _Segment:
        a, b = segment
        char_a = starts[a] if a < len(starts) else len(sentence)
        char_b = starts[b] if b < len(starts) else len(sentence)
        text = sentence[char_a:char_b]
        # only a "normal" word asks what else the segment is about
        normal = any(a <= start < b and label == "NORMAL" for start, _, label in findings)
        height = normal and self._height.search(text) is not None
        # "alignment is normal" is about something else; "heights and disc spaces are
        # preserved" is about the heights too
        excluded = normal and not height and self._exclusions.search(text) is not None
        whole = height or (normal and self._spine.search(text) is not None)
        judged = tuple(
            _Finding(start, end, label, _mention(label, kinds, excluded), "acute" in kinds)
            for (start, end, label), kinds in zip(findings, marks, strict=True)
            if a <= start < b
        )
        if tail is not None:
            # a termination word ends NegEx's scope, but not what a clause of cue words only
            # after it says of the finding: "peu probable, mais non exclue" is a doubt
            judged = tuple(_retold(finding, tail) for finding in judged)
        mine = tuple(span for span in levels if a <= span[0] < b)
        in_level = {k for s, e, _ in mine for k in range(s, e)}
        pure = bool(mine) and all(
            k in in_level or not words[k].isalpha() or words[k].lower() in self._filler
            for k in range(a, b)
        )
        cue = None if pure or judged or not mine else self._cue_only(words, a, b, in_level)
        elsewhere = bool(judged) and not mine and self._elsewhere.search(text) is not None
        return _Segment(a, b, mine, judged, pure=pure, cue=cue, whole=whole, elsewhere=elsewhere)

    def _first_word(self, words: list[str], a: int, b: int) -> int:
        """The index of the first token of ``a`` to ``b`` that is a word other than a connecting
        one (``b`` if there is none)."""
        return next(
            (k for k in range(a, b) if words[k].isalnum() and words[k].lower() not in self._filler),
            b,
        )

    def _cue_only(self, words: list[str], a: int, b: int, levels: set[int]) -> str | None:
        """The one cue kind (old, acute or uncertain) whose phrases make up the words of tokens
        ``a`` to ``b`` beside levels, connecting words and punctuation ("L1 acute", "T12
        chronic", "et ancienne de D12"); None where other words stand there, or none or two
        kinds."""
        kinds = set()
        k = a
        while k < b:
            word = words[k].lower()
            lowered = [w.lower() for w in words[k:b]]
            phrases = [
                (len(phrase), kind)
                for phrase, kind in self._cue_phrases.get(word, ())
                if kind != "negated" and tuple(lowered[: len(phrase)]) == phrase
            ]
            if not phrases:  # a phrase may start with a connecting word: "di vecchia data"
                if k in levels or not words[k].isalpha() or word in self._filler:
                    k += 1
                    continue
                return None
            length, kind = max(phrases)
            kinds.add(kind)
            k += length
        return kinds.pop() if len(kinds) == 1 else None

    def _pipeline(self) -> Language:
        if self._nlp is None:
            self._nlp = build_pipeline(self.rules)
            # the phrases as NegEx's PhraseMatcher sees them (the lower case of its tokens);
            # pseudo phrases only take cues away, so they need not be looked for
            for kind in _EXTENSIONS:
                cues = self.rules.cues[kind]
                for phrase in cue_tokens((*cues.preceding, *cues.following)):
                    words = tuple(t.lower_ for t in self._nlp.make_doc(phrase))
                    if words:
                        self._cue_phrases.setdefault(words[0], []).append((words, kind))
            self._pipes = [(kind, self._nlp.get_pipe(name)) for kind, name in _EXTENSIONS.items()]
        return self._nlp


def build_pipeline(rules: ReportRules) -> Language:
    """A blank spaCy pipeline with four NegEx components (:class:`~auditor.reads.context.
    ScopedNegex`), one per cue kind of the rules (negated, uncertain, old, acute); each marks
    entities with ``span._.tlaudit_<kind>``."""
    import spacy

    from auditor.reads import context  # registers its NegEx component

    nlp = spacy.blank("xx")
    for kind, extension in _EXTENSIONS.items():
        cues = rules.cues[kind]
        pseudo = (*cues.pseudo, *_held_phrases(rules, kind))
        nlp.add_pipe(
            context.FACTORY,
            name=extension,
            config={
                "neg_termset": {
                    "pseudo_negations": cue_tokens(pseudo),
                    "preceding_negations": cue_tokens(cues.preceding),
                    "following_negations": cue_tokens(cues.following),
                    "termination": cue_tokens(rules.termination),
                },
                "extension_name": extension,
                # a cue right before a finding is about it, unless the finding is a "normal" word
                "claiming": [label for label in FINDING_LABELS if label != "NORMAL"],
            },
        )
    return nlp


def _held_phrases(rules: ReportRules, kind: str) -> tuple[str, ...]:
    """The phrases of the other cue kinds that hold a phrase of ``kind``: each says its own
    thing, so none of them is a cue of ``kind``. "cannot be excluded", "no se descarta", "no
    change in" and "not present on prior" hold a negation and never negate; "nicht frisch"
    holds "frisch" and does not make a fracture acute; "not previously known" does not date it."""
    own = rules.cues[kind]
    parts = [_TOKEN.findall(p.lower()) for p in (*own.preceding, *own.following)]
    found = []
    for other in _EXTENSIONS:
        if other == kind:
            continue
        for phrase in (*rules.cues[other].preceding, *rules.cues[other].following):
            tokens = _TOKEN.findall(phrase.lower())
            if any(_holds(tokens, part) for part in parts if part and len(part) < len(tokens)):
                found.append(phrase)
    return tuple(found)


def _holds(tokens: list[str], part: list[str]) -> bool:
    return any(tokens[k : k + len(part)] == part for k in range(len(tokens) - len(part) + 1))


def cue_tokens(phrases: Iterable[str]) -> list[str]:
    """Cue phrases split into the parser's tokens and joined by spaces (``z.n.`` becomes
    ``z . n .``), so that each matches a report however spaCy would have split it."""
    return sorted({" ".join(_TOKEN.findall(phrase)) for phrase in phrases} - {""})


def _mention(label: str, kinds: frozenset[str], excluded: bool) -> Mention | None:
    negated, uncertain, old, acute = (kind in kinds for kind in _EXTENSIONS)
    if label == "NORMAL":
        return None if negated or uncertain or excluded else Mention.NEGATED
    if label == "DOUBTFUL":  # a fracture word that holds its own doubt: Frakturverdacht
        return (
            Mention.NEGATED if negated else Mention.OLD if old and not acute else Mention.UNCERTAIN
        )
    if label == "INJURY":
        return Mention.NEGATED if negated else None
    if label == "OTHER":  # disc height loss, posterior wall involvement: no fracture mention
        return None
    if negated:
        return Mention.NEGATED
    if label == "TREATED" or (old and not acute):
        return Mention.OLD
    return Mention.UNCERTAIN if uncertain else Mention.AFFIRMED


def _retold(finding: _Finding, tail: str) -> _Finding:
    """A fracture finding as a clause of one kind of cue words after it says ("unlikely, but
    not excluded": uncertain; "..., but old": old; "..., but recent": affirmed)."""
    said = _CUE_MENTION[tail]
    if finding.label == "NORMAL" or finding.mention is None or finding.mention is said:
        return finding
    if said is Mention.AFFIRMED and finding.mention is not Mention.OLD:
        return finding  # "acute" only takes back an age
    return replace(finding, mention=said, acute=said is Mention.AFFIRMED)


def _bind(segments: Sequence[_Segment]) -> list[tuple[str, Mention]]:
    """Each level of the sentence with the mention of the finding it takes; study-wide
    mentions for findings no level took."""
    kinds: list[Mention | None] = [None] * len(segments)
    first: list[Mention | None] = [None] * len(segments)
    out: list[tuple[str, Mention]] = []
    # segment -> its levels' slice of out, and whether one of them took an acute finding
    bound: dict[int, tuple[int, int, bool]] = {}
    used: set[tuple[int, int]] = set()
    for k, segment in enumerate(segments):
        usable = [f for f in segment.findings if f.mention is not None]
        if not usable:
            continue
        kinds[k], first[k] = usable[-1].mention, usable[0].mention
        begin, acute = len(out), False
        for start, end, levels in segment.levels:
            # the nearest finding; but a plain one gives way to a doubted or dated fracture
            # word of the same segment ("loss of height of L4 which may represent a fracture")
            hedged = [
                f
                for f in usable
                if f.mention in (Mention.UNCERTAIN, Mention.OLD)
                # and nearer this level than any other ("new fracture of L1 beside the old
                # fracture of L2": L1's is the new one)
                and min(segment.levels, key=lambda s: _distance(s[0], s[1], f))[0] == start
            ]
            plain = all(f.mention is Mention.AFFIRMED for f in usable if f not in hedged)
            pool = hedged if hedged and plain and len(hedged) < len(usable) else usable
            finding = min(pool, key=lambda f: (_distance(start, end, f), f.start > start))
            used.add((finding.start, finding.end))
            acute = acute or finding.acute
            out += [(level, finding.mention) for level in levels if finding.mention]
        bound[k] = (begin, len(out), acute)
    # a segment of levels only takes the finding of the segment before it, else the one after
    for k, segment in enumerate(segments):
        if kinds[k] is not None or not (segment.pure or segment.cue):
            continue
        before = next((kinds[j] for j in range(k - 1, -1, -1) if kinds[j] is not None), None)
        after = next((first[j] for j in range(k + 1, len(segments)) if first[j] is not None), None)
        mention = before or after
        if mention is None or (segment.cue and mention is Mention.NEGATED):
            continue
        if segment.cue:  # "Fractures: L1 acute, T12 chronic"
            mention = _CUE_MENTION[segment.cue]
        kinds[k] = first[k] = mention
        begin = len(out)
        out += [(level, mention) for _, _, levels in segment.levels for level in levels]
        bound[k] = (begin, len(out), False)
        for j in range(len(segments)):  # the findings it took are bound too
            for f in segments[j].findings:
                if f.mention is mention:
                    used.add((f.start, f.end))
    # a doubted or dated finding in a segment without levels reaches back to the levels before
    # it, where these took a plain finding (not said to be acute) or none: "loss of height of
    # L3; a fracture cannot be excluded", "lucency through the L2 pars; fracture not excluded"
    for k, segment in enumerate(segments):
        hedged = [
            f
            for f in segment.findings
            if f.mention in (Mention.UNCERTAIN, Mention.OLD) and (f.start, f.end) not in used
        ]
        j = k - 1
        if segment.levels or not hedged or j < 0 or not segments[j].levels:
            continue
        a, b, acute = bound.get(j, (len(out), len(out), False))
        if acute:
            continue
        taken = hedged[0]
        mention = Mention.OLD if taken.mention is Mention.OLD else Mention.UNCERTAIN
        if a == b:  # its levels took nothing
            out += [(level, mention) for _, _, levels in segments[j].levels for level in levels]
        elif all(kind is Mention.AFFIRMED for _, kind in out[a:b]):
            out[a:b] = [(level, mention) for level, _ in out[a:b]]
        else:
            continue
        used.add((taken.start, taken.end))
    levels_named = any(level != STUDY_WIDE for level, _ in out)
    # where every level the sentence names is negated, a negation beside them is about them:
    # "L4 and L5 of normal height, without fracture", "BWK 12 regelrecht, insbesondere keine
    # Fraktur" (the table reads no study-wide negation there), unless it is said of the rest of
    # the spine: "L1 intact; no fracture elsewhere"
    only_negated = levels_named and all(kind is Mention.NEGATED for _, kind in out)
    for segment in segments:
        for f in segment.findings:
            if f.mention is None or (f.start, f.end) in used:
                continue
            if f.label == "NORMAL" and not segment.whole:
                continue
            # beside named levels only a negation of a segment without levels is study-wide:
            # "Fracture of L2; no other fracture", "Keine frische Fraktur, ältere ... LWK 4"
            if levels_named and (
                (only_negated and not segment.elsewhere)
                or not (f.mention is Mention.NEGATED and not segment.levels)
            ):
                continue
            out.append((STUDY_WIDE, f.mention))
    return out


def _inner_splits(abbreviation: str) -> list[tuple[str, str]]:
    """An abbreviation cut at each period followed by a space: ``z. n.`` gives (``z.``, ``n.``)."""
    parts = re.split(r"(?<=\.)\s+", abbreviation.strip())
    return [(" ".join(parts[:k]), " ".join(parts[k:])) for k in range(1, len(parts))]


def _distance(start: int, end: int, finding: _Finding) -> int:
    return finding.start - end if finding.start >= end else start - finding.end


def _has(sorted_starts: list[int], a: int, b: int) -> bool:
    k = bisect.bisect_left(sorted_starts, a)
    return k < len(sorted_starts) and sorted_starts[k] < b


def _ranges(cuts: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _merged(found: Iterable[LevelMention]) -> tuple[LevelMention, ...]:
    best: dict[str, LevelMention] = {}
    for mention in found:
        kept = best.get(mention.level)
        if kept is None or _SPECIFICITY[mention.mention] < _SPECIFICITY[kept.mention]:
            best[mention.level] = mention
    order = {level: k for k, level in enumerate((STUDY_WIDE, *SPINE_LEVELS))}
    return tuple(sorted(best.values(), key=lambda m: order[m.level]))


def parse_report(text: str, parser: ReportParser | None = None) -> tuple[LevelMention, ...]:
    """Parse one report with ``parser`` (a new one with the shipped rules when None)."""
    return (parser or ReportParser()).parse(text)
