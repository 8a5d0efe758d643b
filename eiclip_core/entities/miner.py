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
Texts stream through in batches, each batch one Doc (see EntityMiner._find_batch), and only the
(start, end, type, value) tuples are kept, so memory stays flat on hundreds of thousands of
descriptions.
"""
import gc
import multiprocessing as mp
import re
from bisect import bisect_right
from itertools import accumulate
from typing import Iterable, Iterator, NamedTuple, Optional

import spacy
from spacy.matcher import Matcher, PhraseMatcher
from spacy.util import filter_spans
from tqdm.auto import tqdm

from eiclip_core.entities.vocab import PLURAL_TYPES, surface_variants
from eiclip_core.data.product_text import normalise_value

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
        # word is re-split with regexes, several times slower (bench/mining.py measures the miner's rate).
        # A larger, still bounded, cache keeps memory flat.
        self.nlp.tokenizer.max_cache_size = cache_size
        # Whitespace special cases ("\n" -> "\n") give the tokens the plain rules give, but any special
        # case stops the tokenizer caching the rest of its Doc, and _find_batch joins texts by newlines.
        self.nlp.tokenizer.rules = {k: v for k, v in self.nlp.tokenizer.rules.items() if k.strip()}
        self.types = [t for t in vocabulary if t != "fit"]
        self.phrase_matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self._add_value_patterns(vocabulary, raw_forms or {})
        self._type_of = {self.nlp.vocab.strings[t]: t for t in self.types}
        self._add_fit_patterns(fit_words, standalone_fit)
        self._fit_direct = self.nlp.vocab.strings[_FIT_DIRECT]
        self._fit_context = self.nlp.vocab.strings[_FIT_CONTEXT]

    def _add_value_patterns(self, vocabulary: dict, raw_forms: dict) -> None:
        """Every surface form of every value, as PhraseMatcher patterns keyed by type (self._lookup
        maps each form back to its value)."""
        # type -> surface form (lower case) -> value as given. The value's own normal form is
        # registered before derived variants, so "coat" (a value) beats "coat" (from "jackets & coats").
        self._lookup = {t: {} for t in self.types}
        for t in self.types:
            values = [v for v in vocabulary[t] if isinstance(v, str) and normalise_value(v)]
            for v in values:
                self._lookup[t].setdefault(normalise_value(v), v)
            for v in values:
                for raw in [v] + list(raw_forms.get(t, {}).get(v, ())):
                    for form in sorted(surface_variants(v, t, raw)):
                        self._lookup[t].setdefault(form, v)
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

    def _add_fit_patterns(self, fit_words: Iterable[str], standalone_fit: Iterable[str]) -> None:
        # Fit. Standalone words ("oversized") and glued forms ("slimfit") are fits by themselves: the
        # PhraseMatcher finds them (key _FIT_DIRECT). The other fit words (key _FIT_CONTEXT) need a
        # context, checked by token Matcher patterns on the few tokens that follow them (the Matcher
        # tests every pattern at every token, so running it on whole texts would cost several times more).
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

    # -- public -----------------------------------------------------------------------------
    def find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
             total: Optional[int] = None, n_process: int = 1) -> list:
        """One list per text of (start, end, type, value), sorted by start."""
        return list(self.iter_find(texts, batch_size, progress, total, n_process))

    def iter_find(self, texts: Iterable, batch_size: int = 2000, progress: bool = False,
                  total: Optional[int] = None, n_process: int = 1) -> Iterator[list]:
        """Streaming find: yields each text's mentions in order; no Doc outlives its batch.

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
            # gc.freeze: a worker's collector then skips the heap it inherited (see the gc docs on fork).
            with mp.get_context("fork").Pool(n_process, initializer=gc.freeze) as pool:
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
        for batch in _chunks(texts, batch_size):
            yield from self._find_batch(batch)

    # -- internals ---------------------------------------------------------------------------
    def _find_batch(self, texts: list) -> list:
        """Mentions of a batch of texts, tokenized and matched as one Doc.

        The texts are joined by newlines. The tokenizer splits at any whitespace, so each text gets
        exactly the tokens it gets alone, and no pattern holds a whitespace token, so no match spans
        two texts. One Doc per batch instead of one per text saves spaCy's per-Doc and per-call
        overhead, which costs more than the tokenizing and matching themselves on short texts; for
        the same reason character offsets come from arrays, not from Token objects.
        """
        joined = "\n".join(texts)
        doc = self.nlp.make_doc(joined)
        text_start = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=0))  # in joined
        tok_start, space_after = doc.to_array(["IDX", "SPACY"]).T.tolist() if len(doc) else ([], [])
        tok_start.append(len(joined))  # a token ends where the next starts, less its trailing space
        hits = [[] for _ in texts]  # per text: (token start, token end, start, end, type, value)
        for match_id, s, e in self.phrase_matcher(doc):
            a, b = tok_start[s], tok_start[e] - space_after[e - 1]
            if not self._isolated(joined, a, b):
                continue
            if match_id == self._fit_direct or match_id == self._fit_context:
                # A fit mention is the fit word's token; a context pattern must start there.
                if match_id == self._fit_context and not any(
                        m == 0 for _, m, _ in self.fit_matcher(doc[s:s + _FIT_WINDOW])):
                    continue
                t, value = "fit", self._fit_value[joined[a:b].lower()]
            else:
                t = self._type_of[match_id]
                surface = joined[a:b].lower()
                value = self._lookup[t].get(surface)
                if value is None:  # lookup keys have single spaces: "canada  goose" -> "canada goose"
                    value = self._lookup[t].get(_SPACES.sub(" ", surface))
                    if value is None:
                        continue
            i = bisect_right(text_start, a) - 1
            hits[i].append((s, e, a - text_start[i], b - text_start[i], t, value))
        return [self._longest(h) for h in hits]

    @staticmethod
    def _longest(hits: list) -> list:
        """(start, end, type, value) in text order; of overlapping matches the longest wins.

        Each type has one pattern per token sequence, so a token range holds at most one hit per
        type; hits on one range come in type order. spacy.util.filter_spans picks the ranges (it
        reads nothing of a Span but start and end).
        """
        hits.sort()
        if any(h[0] < prev[1] and h[:2] != prev[:2] for prev, h in zip(hits, hits[1:])):
            kept = set(filter_spans({_TokenRange(*h[:2]) for h in hits}))
            hits = [h for h in hits if h[:2] in kept]
        return [h[2:] for h in hits]

    @staticmethod
    def _isolated(text: str, start: int, end: int) -> bool:
        """No letter or digit glued to either side: the match is not inside a longer word."""
        return not (start > 0 and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum())


class _TokenRange(NamedTuple):
    """What filter_spans needs of a Span: token start and end (exclusive)."""
    start: int
    end: int


# Worker side of iter_find(n_process > 1): forked children inherit the miner through this global.
_FORKED_MINER = None


def _find_chunk(texts: list) -> list:
    return _FORKED_MINER._find_batch(texts)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
