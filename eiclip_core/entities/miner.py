"""Entity mentions in product texts with spaCy, offline: blank English tokenizer + matchers.

Known values (brands, categories, materials, ...) are found with a PhraseMatcher on lower-case
tokens; fit words that are fits on their own ("oversized", "slimfit") likewise, the others through
token Matcher patterns on their context ("slim fit", "slim-fit", "relaxed-fit", "straight silk
skirt"). A fit mention spans the fit word only ("relaxed" in "relaxed-fit"): the value is the fit
word and "-fit" merely marks it (as in CONTRACTS.md's ground truth).
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
import multiprocessing as mp
import re
from typing import Iterable, Iterator, Optional

import spacy
from spacy.matcher import Matcher, PhraseMatcher
from spacy.util import filter_spans
from tqdm.auto import tqdm

from eiclip_core.entities.vocab import PLURAL_TYPES, surface_variants
from eiclip_core.text import normalise_value

# Fit words (canonical value = the word). A fit word is a fit mention when the Matcher sees it
#   - before a fit noun: "slim fit", "slim-fit", "straight-leg", "relaxed silhouette" (or glued: "slimfit");
#   - alone, for the STANDALONE words, which have no other meaning on a product page ("oversized");
#   - before a garment noun, at most two words later: "slim jeans", "straight silk skirt". Garment
#     nouns are the category/subcategory words of the vocabulary plus GARMENT_NOUNS.
# So "slim wallet", "regular price" and "straight hem" are not fits.
FIT_WORDS = ("slim", "relaxed", "regular", "oversized", "loose", "skinny", "straight", "tailored",
             "boxy", "baggy")
STANDALONE_FIT = ("oversized", "loose", "skinny", "relaxed", "tailored", "boxy", "baggy")
FIT_NOUNS = ("fit", "fitting", "fitted", "cut", "leg", "legs", "silhouette", "shape")
GARMENT_NOUNS = ("jeans", "trousers", "pants", "chinos", "shorts", "shirt", "shirts", "t-shirt", "tee",
                 "top", "jacket", "coat", "blazer", "suit", "dress", "skirt", "sweater", "sweatshirt",
                 "hoodie", "jumper", "cardigan", "joggers", "leggings", "parka", "vest", "polo")

_SPACES = re.compile(r"\s+")
_SURROGATES = re.compile("[\ud800-\udfff]")
_FIT_DIRECT = "__fit__"  # PhraseMatcher key: fit words that are fits on their own
_FIT_CONTEXT = "__fit_if__"  # PhraseMatcher key: fit words that need a fit or garment noun after them
_FIT_WINDOW = 4  # tokens the longest fit pattern spans (fit word, two words, garment noun)


def as_text(x) -> str:
    """Any input as a string the tokenizer accepts, of the same length (so offsets hold).

    Bytes decode as latin-1 (as Fashion-Gen strings), non-text gives "", and lone surrogates
    (which UTF-8 cannot encode, so spaCy would raise) become U+FFFD one for one.
    """
    if isinstance(x, (bytes, bytearray)):
        x = bytes(x).decode("latin-1")
    if not isinstance(x, str):
        return ""
    if not x.isascii():
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            x = _SURROGATES.sub("\ufffd", x)
    return x


class EntityMiner:
    """Find entity mentions: `EntityMiner({"brand": ["Diesel", "Canada Goose"]}).find(texts)`.

    vocabulary: type -> known values; mentions report the value exactly as given here.
    fit_words / standalone_fit: the built-in fit patterns (type "fit", value = the fit word);
    pass fit_words=() to switch fit mining off.
    """

    def __init__(self, vocabulary: dict, fit_words: Iterable[str] = FIT_WORDS,
                 standalone_fit: Iterable[str] = STANDALONE_FIT, raw_forms: Optional[dict] = None,
                 cache_size: int = 200_000):
        self.nlp = spacy.blank("en")
        self.nlp.max_length = 10**9  # only the tokenizer runs; long texts cost linear time, no model memory
        # The tokenizer caches the pieces of each whitespace-separated chunk, but stops caching once
        # it holds max_cache_size chunks (default 10k): the patterns alone fill that, after which every
        # word is re-split with regexes (3-5x slower). A larger, still bounded, cache keeps memory flat.
        self.nlp.tokenizer.max_cache_size = cache_size
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
            # The tokenizer depends on case ("A.P.C." is one token, "a.p.c." two), so each form is
            # tokenized as written, lower, upper and title case; duplicates are dropped.
            patterns, seen = [], set()
            spellings = {f for v in vocabulary[t] if isinstance(v, str) for f in (v, " ".join(v.split()))}
            candidates = sorted(set(self._lookup[t]) | {f for f in spellings if f.lower() in self._lookup[t]})
            for doc in self.nlp.tokenizer.pipe(c for f in candidates for c in (f, f.upper(), f.title())):
                key = tuple(tok.lower_ for tok in doc)
                if key not in seen:
                    seen.add(key)
                    patterns.append(doc)
            if patterns:
                self.phrase_matcher.add(t, patterns)
        self._type_of = {self.nlp.vocab.strings[t]: t for t in self.types}

        # Fit. Standalone words ("oversized") and glued forms ("slimfit") are fits by themselves: the
        # PhraseMatcher finds them (key _FIT_DIRECT). The other fit words (key _FIT_CONTEXT) need a
        # context, checked by token Matcher patterns on the few tokens that follow them (the Matcher
        # tests every pattern at every token, so running it on whole texts would cost ~5x more).
        # The blank tokenizer splits "slim-fit" into "slim", "-", "fit".
        self.fit_words = tuple(w.lower() for w in fit_words)
        standalone = [w.lower() for w in standalone_fit if w.lower() in self.fit_words]
        self.fit_matcher = Matcher(self.nlp.vocab)
        self._fit_value = {}  # token (lower case) -> fit word
        if self.fit_words:
            words, nouns = list(self.fit_words), list(FIT_NOUNS)
            glued = {w + n: w for w in words for n in nouns if n != "shape"}  # "slimfit"
            self._fit_value = {**{w: w for w in words}, **glued}
            # Garment nouns by their first token ("t-shirt" is "t", "-", "shirt" to the tokenizer).
            nouns_text = set(GARMENT_NOUNS) | {f.split(" ")[-1] for t in self.types if t in PLURAL_TYPES
                                               for f in self._lookup[t]}
            garments = sorted({doc[0].lower_ for doc in self.nlp.tokenizer.pipe(sorted(nouns_text))
                               if len(doc) and doc[0].is_alpha})
            word_any = {"IS_ALPHA": True, "OP": "?"}
            self.fit_matcher.add("fit", [
                [{"LOWER": {"IN": words}}, {"ORTH": "-", "OP": "?"}, {"LOWER": {"IN": nouns}}],  # slim-fit
                [{"LOWER": {"IN": words}}, word_any, word_any, {"LOWER": {"IN": garments}}],  # slim silk shirt
            ])
            direct = standalone + sorted(glued)
            context = [w for w in words if w not in standalone]
            self.phrase_matcher.add(_FIT_DIRECT, list(self.nlp.tokenizer.pipe(direct)))
            if context:
                self.phrase_matcher.add(_FIT_CONTEXT, list(self.nlp.tokenizer.pipe(context)))
        self._fit_direct = self.nlp.vocab.strings[_FIT_DIRECT]
        self._fit_context = self.nlp.vocab.strings[_FIT_CONTEXT]

    # -- public -----------------------------------------------------------------------------
    def find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
             total: Optional[int] = None, n_process: int = 1) -> list:
        """One list per text of (start, end, type, value), sorted by start."""
        return list(self.iter_find(texts, batch_size, progress, total, n_process))

    def iter_find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
                  total: Optional[int] = None, n_process: int = 1) -> Iterator[list]:
        """Streaming find: yields each text's mentions in order; no Doc outlives its text.

        n_process > 1 forks worker processes that inherit this miner and send back only the
        mention tuples (spaCy's own nlp.pipe(n_process=...) would pickle whole Docs back).
        Without the fork start method (Windows) it runs in this process.
        """
        if total is None and hasattr(texts, "__len__"):
            total = len(texts)
        quiet = {} if progress else {"disable": True}  # leave TQDM_DISABLE=1 in charge otherwise
        bar = tqdm(total=total, desc="mining", unit="descriptions", mininterval=1.0, **quiet)
        if n_process > 1 and "fork" in mp.get_all_start_methods():
            global _FORKED_MINER
            _FORKED_MINER = self
            with mp.get_context("fork").Pool(n_process) as pool:
                for chunk in pool.imap(_find_chunk, _chunks(map(as_text, texts), batch_size)):
                    bar.update(len(chunk))
                    yield from chunk
            _FORKED_MINER = None
        else:
            for mentions in self._stream(map(as_text, texts), batch_size):
                bar.update()
                yield mentions
        bar.close()

    def _stream(self, texts: Iterable[str], batch_size: int) -> Iterator[list]:
        pairs = ((text, text) for text in texts)  # the text rides along: doc.text would rebuild it
        for doc, text in self.nlp.pipe(pairs, batch_size=batch_size, as_tuples=True):
            yield self._mentions(doc, text)

    # -- internals ---------------------------------------------------------------------------
    def _mentions(self, doc, text: str) -> list:
        found = {}  # (token start, token end) -> {(type, value): (start_char, end_char)}
        fit_at = []  # (token, is a fit on its own) for every fit word
        for match_id, s, e in self.phrase_matcher(doc):
            if match_id == self._fit_direct or match_id == self._fit_context:
                fit_at.append((s, match_id == self._fit_direct))
                continue
            a, b = self._chars(doc, s, e)
            if self._isolated(text, a, b):
                t = self._type_of[match_id]
                value = self._lookup[t].get(_SPACES.sub(" ", text[a:b].lower()))
                if value is not None:
                    found.setdefault((s, e), {})[(t, value)] = (a, b)
        for s0, direct in fit_at:  # a mention is the fit word's token; the match must start there
            if direct or any(s == 0 for _, s, _ in self.fit_matcher(doc[s0:s0 + _FIT_WINDOW])):
                a, b = self._chars(doc, s0, s0 + 1)
                if self._isolated(text, a, b):
                    found.setdefault((s0, s0 + 1), {})[("fit", self._fit_value[text[a:b].lower()])] = (a, b)
        keys = sorted(found)
        if any(k[0] < prev[1] for prev, k in zip(keys, keys[1:])):  # overlaps: the longest wins
            keys = sorted((sp.start, sp.end) for sp in filter_spans([doc[s:e] for s, e in keys]))
        return [(a, b, t, value) for k in keys for (t, value), (a, b) in found[k].items()]

    @staticmethod
    def _chars(doc, s: int, e: int):
        """Character offsets of tokens s..e-1 (no Span object: this runs for every match)."""
        last = doc[e - 1]
        return doc[s].idx, last.idx + len(last)

    @staticmethod
    def _isolated(text: str, start: int, end: int) -> bool:
        """No letter or digit glued to either side: the match is not inside a longer word."""
        return not (start > 0 and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum())


# Worker side of iter_find(n_process > 1): forked children inherit the miner through this global.
_FORKED_MINER = None


def _find_chunk(texts: list) -> list:
    return list(_FORKED_MINER._stream(texts, len(texts)))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
