"""The text policy of imported catalogs: any Unicode text -> the latin-1 text Fashion-Gen files hold.

Fashion-Gen stores fixed-width latin-1 byte strings and the reader decodes them as latin-1, so an
imported catalog must be latin-1 too. Rules, applied character by character after NFC composition
(so "e" + combining acute becomes the latin-1 "é"):

1. latin-1 characters are kept as they are ("Appliqué", "façade", "½", "µ"); control characters
   become spaces, the soft hyphen is removed, and every run of white space becomes one space
   (descriptions are one line).
2. Typographic characters and letters outside latin-1 that have a usual plain spelling take it:
   curly quotes -> ' and ", dashes -> "-", "…" -> "...", "•" -> "-", "€" -> "EUR", "™" -> "(TM)",
   "œ" -> "oe", "ł" -> "l", "đ" -> "d", "ı" -> "i"; zero-width characters are removed.
3. Otherwise the compatibility form is used when it is latin-1 ("ﬁ" -> "fi", full-width "Ａ" -> "A").
4. Otherwise the letter without its accents is used when that is latin-1 ("ő" -> "o", "č" -> "c",
   "ș" -> "s").
5. Otherwise the character is dropped (CJK, emoji, Greek, Cyrillic): the kit's text towers are English.

Replacements and drops are counted (`TextPolicy.replaced`, `.dropped`) and written to the import
report, so a catalog that loses much of its text is seen at once. A value that is empty afterwards is
empty: a product whose name and description both end empty is a bad row of the import.
"""
import re
import unicodedata
from collections import Counter
from functools import lru_cache

_PLAIN_FORMS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u2039": "'", "\u203a": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...", "\u2022": "-", "\u2023": "-", "\u2043": "-",
    "\u20ac": "EUR", "\u2122": "(TM)", "\u2044": "/", "\u2215": "/",
    "\u0153": "oe", "\u0152": "OE", "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u0131": "i",
    "\u200b": "", "\u200c": "", "\u200d": "", "\u2060": "", "\ufeff": "",
}
# latin-1 control characters -> space, soft hyphen -> nothing
_CONTROLS = {c: " " for c in (*range(0, 32), *range(127, 160))} | {0xAD: ""}
_SPACES = re.compile(r"\s+")


def _is_latin1(s: str) -> bool:
    return s.isascii() or max(s) <= "\xff"  # both in C: a Python loop over a long description is slow


@lru_cache(maxsize=4096)
def latin1_form(ch: str) -> str | None:
    """The latin-1 text that stands for one non-latin-1 character under rules 2 to 4; None = drop."""
    if ch in _PLAIN_FORMS:
        return _PLAIN_FORMS[ch]
    compat = unicodedata.normalize("NFKC", ch)
    if _is_latin1(compat):
        return compat
    bare = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    if bare and _is_latin1(bare):
        return unicodedata.normalize("NFC", bare)
    return None


class TextPolicy:
    """Converts values to latin-1 text and counts what it changed, for the import report."""

    def __init__(self):
        self.replaced = Counter()  # character -> times it was replaced by a latin-1 form
        self.dropped = Counter()  # character -> times it was dropped
        self.values_changed = 0  # values that lost or changed at least one character

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        if not _is_latin1(text):
            out = []
            for ch in text:
                if ord(ch) < 256:
                    out.append(ch)
                    continue
                form = latin1_form(ch)
                (self.dropped if form is None else self.replaced)[ch] += 1
                out.append(form or "")
            self.values_changed += 1
            text = "".join(out)
        return _SPACES.sub(" ", text.translate(_CONTROLS)).strip()

    def summary(self, most: int = 20) -> dict:
        """What the policy changed, for import_report.json (the most frequent characters first)."""
        show = lambda counter: {f"{c} (U+{ord(c):04X})": n for c, n in counter.most_common(most)}  # noqa: E731
        return {"values_changed": self.values_changed,
                "characters_replaced": sum(self.replaced.values()), "characters_dropped": sum(self.dropped.values()),
                "most_replaced": show(self.replaced), "most_dropped": show(self.dropped)}
