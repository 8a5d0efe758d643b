"""The generated world as data: vocabularies, the catalogue, and the entity values of one data set.

Fixed vocabularies (colour words, materials, fits, seasons, the catalogue of categories and
subcategories) are module constants any generator may reuse. `build_world` draws the parts that
depend on the seed and on the confounding knob: the brands (names, popularity, marks) and which
category and subcategory values are ordinary English words (METHOD.md section 1).
"""
from dataclasses import dataclass

import numpy as np

from eiclip_core.data.product_text import normalise_value
from eiclip_core.data.text_tower import text_tower_vocabulary

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
SEASONS = tuple(f"{half}{year}" for year in range(2014, 2019) for half in ("SS", "FW"))

# ordinary English words used as brand names at high confounding, by what they collide with
# (notebook 05 reads the kinds from here; BRAND_ORDINARY keeps their order, which the draws depend on)
BRAND_ORDINARY_KINDS = {
    "colour-word": (  # collide with the visible fill colour
        "Olive", "Navy", "Ivory", "Coral", "Ruby", "Amber", "Jade", "Plum", "Cherry", "Charcoal", "Sand",
        "Mustard", "Rust", "Lilac", "Teal", "Lemon", "Cobalt", "Crimson"),
    "material-word": ("Denim", "Velvet", "Suede", "Tweed", "Satin", "Corduroy", "Mohair", "Flannel"),  # texture
    "garment-word": ("Hoodie", "Poncho", "Tuxedo", "Bikini", "Sandal", "Mitten", "Beret", "Cardigan"),  # silhouette
    "plain-noun": (  # a strong non-fashion meaning (the paper's "Diesel", "Canada Goose")
        "Arrow", "Goose", "Diesel", "Anchor", "Falcon", "Pilot", "Canyon", "Glacier", "Harbour", "Maple",
        "Pebble", "Thunder", "Ember", "Compass"),
}
BRAND_ORDINARY = tuple(word for words in BRAND_ORDINARY_KINDS.values() for word in words)
# inks of brand marks (RGB): dark enough to stand out on any fill and on the white background
BRAND_INKS = np.array([(20, 20, 20), (200, 20, 20), (20, 60, 200), (10, 130, 60), (140, 20, 160), (200, 120, 0)])

# syllables of made-up brand names: onset + vowel, two or three times, then an optional ending
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "vel")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_ENDINGS = ("", "", "n", "r", "s", "l", "x")


@dataclass(frozen=True)
class Sub:
    """One subcategory = one silhouette; a plain garment term and an ordinary-word alias."""
    shape: str  # key of render.SILHOUETTES
    plain: str  # metadata value at low confounding (upper case, like the real files)
    plain_noun: str  # singular noun of names; equal to the value for plural-only garments
    ordinary: str  # metadata value when this subcategory is an ordinary (misleading) word
    ordinary_noun: str
    women_only: bool = False


@dataclass(frozen=True)
class Cat:
    """One category: its two possible values, its department, and how often products fall in it."""
    plain: str
    ordinary: str  # "TOPS" is the paper's example: a "top" is a position
    department: str
    has_fit: bool  # clothing has a fit (cut); shoes and bags do not
    weight: float  # share of products
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
SUBCATEGORIES = tuple(sub for cat in CATALOGUE for sub in cat.subs)


@dataclass(frozen=True)
class World:
    """The entity values of one generated data set; lists are indexed like the brands or CATALOGUE."""
    brands: list  # brand names
    brand_weights: np.ndarray  # popularity (sums to 1), skewed as in the real data
    ordinary_brand: np.ndarray  # bool per brand: an ordinary English word
    brand_glyphs: list  # per brand, its mark: a (3, 3) bool glyph, never empty or full, all distinct
    brand_inks: list  # per brand, the RGB ink of its mark
    category_values: list  # per CATALOGUE entry, its metadata value
    ordinary_category: np.ndarray  # bool per CATALOGUE entry
    subcategory_values: dict  # Sub.shape -> metadata value
    subcategory_nouns: dict  # Sub.shape -> the singular noun of names
    ordinary_subcategory: dict  # Sub.shape -> bool
    confounding: float

    def ordinary_word_values(self) -> dict:
        """Entity values (normalised) that are ordinary English words with a misleading everyday meaning."""
        return {
            "brand": sorted(normalise_value(b) for b, o in zip(self.brands, self.ordinary_brand) if o),
            "category": sorted(normalise_value(v) for v, o in zip(self.category_values, self.ordinary_category)
                               if o),
            "subcategory": sorted(normalise_value(self.subcategory_values[shape])
                                  for shape, o in self.ordinary_subcategory.items() if o),
            "fit": sorted(FIT_ORDINARY),
        }


def brand_count(n_products: int) -> int:
    """How many brands a data set of n_products training products has (12 to 40)."""
    return int(np.clip(n_products // 60, 12, 40))


def build_world(seed: int, confounding: float, n_train: int) -> World:
    """Vocabularies of one generated data set: brands, categories and subcategories chosen by the knob."""
    rng = np.random.default_rng([seed, 1])
    n_brands = brand_count(n_train)
    ordinary_brand = _ordinary_mask(n_brands, confounding, rng)
    pool = list(rng.permutation(BRAND_ORDINARY))
    # made-up brands avoid the default text tower's whole words, so at confounding 0 no brand has a
    # general-English meaning for the encoder
    taken = ({w.lower() for w in BRAND_ORDINARY} | set(COLOURS) | set(MATERIALS) | set(FIT_VALUES)
             | text_tower_vocabulary())
    brands = [pool.pop() if ordinary else _made_up_word(rng, taken) for ordinary in ordinary_brand]
    # brand mark: a 3x3 glyph (distinct, never empty or full: codes 1..510 of 9 bits) in one of the inks
    codes = rng.permutation(np.arange(1, 511))[:n_brands]
    glyphs = [((code >> np.arange(9)) & 1).reshape(3, 3).astype(bool) for code in codes]
    inks = [BRAND_INKS[int(rng.integers(len(BRAND_INKS)))] for _ in range(n_brands)]
    ordinary_cat = _ordinary_mask(len(CATALOGUE), confounding, rng)
    ordinary_sub = _ordinary_mask(len(SUBCATEGORIES), confounding, rng)
    weights = 1.0 / (np.arange(n_brands) + 3.0)  # skewed brand popularity, as in the real data
    return World(
        brands=brands, brand_weights=weights / weights.sum(), ordinary_brand=ordinary_brand,
        brand_glyphs=glyphs, brand_inks=inks,
        category_values=[c.ordinary if o else c.plain for c, o in zip(CATALOGUE, ordinary_cat)],
        ordinary_category=ordinary_cat,
        subcategory_values={s.shape: (s.ordinary if o else s.plain) for s, o in zip(SUBCATEGORIES, ordinary_sub)},
        subcategory_nouns={s.shape: (s.ordinary_noun if o else s.plain_noun)
                           for s, o in zip(SUBCATEGORIES, ordinary_sub)},
        ordinary_subcategory={s.shape: bool(o) for s, o in zip(SUBCATEGORIES, ordinary_sub)},
        confounding=confounding,
    )


def _ordinary_mask(n: int, confounding: float, rng) -> np.ndarray:
    """Exactly round(confounding * n) of n slots are ordinary words, at seeded random positions."""
    mask = np.zeros(n, bool)
    mask[rng.permutation(n)[:int(round(confounding * n))]] = True
    return mask


def _made_up_word(rng, taken: set) -> str:
    """A pronounceable brand name of 5 to 10 letters not in `taken` (which it joins), a few accented."""
    while True:
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(int(rng.integers(2, 4))))
        word = (word + _ENDINGS[rng.integers(len(_ENDINGS))]).capitalize()
        if word.endswith("e") and rng.random() < 0.3:
            word = word[:-1] + "é"  # a few accented latin-1 brand names, as in the real data
        if word.lower() not in taken and 5 <= len(word) <= 10:
            taken.add(word.lower())
            return word
