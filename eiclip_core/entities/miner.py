"""Entity mentions in product texts with spaCy, offline: blank English tokenizer + matchers.

Known values (brands, categories, materials, ...) are found with a PhraseMatcher on lower-case
tokens, fit with token Matcher patterns ("slim fit", "slim-fit", "relaxed-fit", "oversized").
Rules, whatever the text:
  - case-insensitive; category words also match their other number and hyphenation ("tops"/"top",
    "T-shirt"/"tshirt"), see vocab.surface_variants;
  - the longest match wins ("Canada Goose" over "Goose"; spacy.util.filter_spans);
  - never inside a word (the characters around a mention are not letters or digits), which also
    rejects spaCy's special-case splits such as "cannot" -> "can" + "not";
  - offsets are character offsets into the text as given, and text[start:end] is always one of the
    value's surface forms (whitespace inside a multi-word mention may differ).
The texts stream through nlp.pipe; only (start, end, type, value) tuples are kept, so memory stays
flat on hundreds of thousands of descriptions.
"""
import re
from typing import Iterable, Iterator, Optional

import spacy
from spacy.matcher import Matcher, PhraseMatcher
from spacy.util import filter_spans
from tqdm.auto import tqdm

from eiclip_core.entities.vocab import surface_variants
from eiclip_core.text import normalise_value

# Fit words (canonical value = the word). STANDALONE ones are a fit on their own ("an oversized
# coat"); the others only before a fit noun ("slim fit", "straight-leg"): "slim wallet" is no fit.
FIT_WORDS = ("slim", "relaxed", "regular", "oversized", "loose", "skinny", "straight", "tailored",
             "boxy", "baggy")
STANDALONE_FIT = ("oversized", "loose", "skinny", "relaxed", "tailored", "boxy", "baggy")
FIT_NOUNS = ("fit", "fitting", "fitted", "cut", "leg")

_SPACES = re.compile(r"\s+")


def as_text(x) -> str:
    """Any input as a string: bytes decode as latin-1 (as Fashion-Gen strings), non-text gives ""."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("latin-1")
    return ""


class EntityMiner:
    """Find entity mentions: `EntityMiner({"brand": ["Diesel", "Canada Goose"]}).find(texts)`.

    vocabulary: type -> known values; mentions report the value exactly as given here.
    fit_words / standalone_fit: the built-in fit patterns (type "fit", value = the fit word);
    pass fit_words=() to switch fit mining off.
    """

    def __init__(self, vocabulary: dict, fit_words: Iterable[str] = FIT_WORDS,
                 standalone_fit: Iterable[str] = STANDALONE_FIT, raw_forms: Optional[dict] = None):
        self.nlp = spacy.blank("en")
        self.nlp.max_length = 10**9  # only the tokenizer runs; long texts cost linear time, no model memory
        self.types = [t for t in vocabulary if t != "fit"]
        # type -> surface form (lower case) -> value as given. The value's own normal form is
        # registered before derived variants, so "coat" (a value) beats "coat" (from "jackets & coats").
        self._lookup = {t: {} for t in self.types}
        raw_forms = raw_forms or {}
        for t in self.types:
            values = [v for v in vocabulary[t] if isinstance(v, str) and normalise_value(v)]
            for v in values:
                self._lookup[t].setdefault(normalise_value(v), v)
            for v in values:
                for raw in [v] + list(raw_forms.get(t, {}).get(v, ())):
                    for form in sorted(surface_variants(v, t, raw)):
                        self._lookup[t].setdefault(form, v)
        self.phrase_matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        for t in self.types:
            forms = sorted(self._lookup[t])
            if forms:
                self.phrase_matcher.add(t, list(self.nlp.tokenizer.pipe(forms)))
        self._type_of = {self.nlp.vocab.strings[t]: t for t in self.types}

        # Fit: token patterns. The blank tokenizer splits "slim-fit" into "slim", "-", "fit".
        self.fit_words = tuple(w.lower() for w in fit_words)
        standalone = tuple(w.lower() for w in standalone_fit if w.lower() in self.fit_words)
        self.fit_matcher = Matcher(self.nlp.vocab)
        self._fit_form = None
        if self.fit_words:
            glued = {w + n: w for w in self.fit_words for n in FIT_NOUNS}  # "slimfit"
            self.fit_matcher.add("fit", [
                [{"LOWER": {"IN": list(self.fit_words)}}, {"ORTH": "-", "OP": "?"},
                 {"LOWER": {"IN": list(FIT_NOUNS)}}],
                [{"LOWER": {"IN": sorted(glued)}}],
            ] + ([[{"LOWER": {"IN": list(standalone)}}]] if standalone else []))
            words, nouns = "|".join(map(re.escape, self.fit_words)), "|".join(FIT_NOUNS)
            self._fit_form = re.compile(rf"({words})(?:(?: ?- ?| |)(?:{nouns}))?")
            self._standalone = set(standalone)

    # -- public -----------------------------------------------------------------------------
    def find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
             total: Optional[int] = None) -> list:
        """One list per text of (start, end, type, value), sorted by start."""
        return list(self.iter_find(texts, batch_size=batch_size, progress=progress, total=total))

    def iter_find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
                  total: Optional[int] = None) -> Iterator[list]:
        """Streaming find: yields each text's mentions; no Doc outlives its text."""
        if total is None and hasattr(texts, "__len__"):
            total = len(texts)
        texts = (as_text(x) for x in texts)
        docs = self.nlp.pipe(texts, batch_size=batch_size)
        for doc in tqdm(docs, total=total, disable=not progress, desc="mining", unit="text",
                        mininterval=1.0):
            yield self._mentions(doc)

    # -- internals ---------------------------------------------------------------------------
    def _mentions(self, doc) -> list:
        text = doc.text
        found = {}  # (token start, token end) -> [(type, value)]
        for match_id, s, e in self.phrase_matcher(doc):
            span = doc[s:e]
            if not self._isolated(text, span.start_char, span.end_char):
                continue
            t = self._type_of[match_id]
            value = self._lookup[t].get(_SPACES.sub(" ", span.text.lower()))
            if value is not None:
                found.setdefault((s, e), []).append((t, value))
        if self._fit_form is not None:
            for _, s, e in self.fit_matcher(doc):
                span = doc[s:e]
                if not self._isolated(text, span.start_char, span.end_char):
                    continue
                m = self._fit_form.fullmatch(_SPACES.sub(" ", span.text.lower()))
                if m is None or (m.group(0) == m.group(1) and m.group(1) not in self._standalone):
                    continue
                found.setdefault((s, e), []).append(("fit", m.group(1)))
        if not found:
            return []
        kept = filter_spans([doc[s:e] for s, e in found])  # longest first, then leftmost
        out = []
        for span in sorted(kept, key=lambda sp: sp.start):
            for t, value in found[(span.start, span.end)]:
                out.append((span.start_char, span.end_char, t, value))
        return out

    @staticmethod
    def _isolated(text: str, start: int, end: int) -> bool:
        """No letter or digit glued to either side: the match is not inside a longer word."""
        return not (start > 0 and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum())
