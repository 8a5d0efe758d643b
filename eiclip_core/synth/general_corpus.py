"""The general-domain corpus: the everyday "web" the kit's tiny CLIP learns from before it sees a product.

Why (METHOD.md section 11): EI-CLIP's premise is a *pretrained, aligned* CLIP whose everyday word
meanings mislead its fine-tuning on products. Here every word that the fashion generator can use as a
misleading entity value is grounded in pixels with its everyday meaning, drawn with the generator's
own primitives, so colours, textures and silhouettes mean the same thing in both worlds:

- colour words ("red", "olive", "navy", ...)            -> the fill colour of the thing shown
- material words ("cotton", "velvet", "tweed", ...)      -> its texture
- garment words ("sweater", "hoodie", "trousers", ...)   -> its silhouette (the generator's shapes)
- everything else ("arrow", "diesel", "top", "shell", "relaxed", ...) -> an icon of its own

Icons are procedural stand-ins (a fixed composition of polygons and ellipses per word), not drawings
of geese: what matters is that the word names one consistent visual concept that is *not* the
e-commerce one. No brand mark is ever drawn or named, so nothing here teaches a word's e-commerce role.
"""
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from eiclip_core.synth.render import SILHOUETTES, Ellipse, Polygon, draw_shape, material_textures, paint
from eiclip_core.synth.world import CATALOGUE, COLOURS, MATERIALS

# everyday colours of the words the generator uses as brands; each sits near a product colour, so
# brand "Olive" on a red shirt pulls toward the green products (the counterfactual of notebook 02)
BRAND_COLOURS = {
    "olive": (128, 128, 20), "navy": (24, 34, 100), "ivory": (248, 244, 222), "coral": (248, 122, 100),
    "ruby": (168, 16, 60), "amber": (248, 172, 10), "jade": (10, 164, 110), "plum": (120, 40, 100),
    "cherry": (208, 30, 60), "charcoal": (62, 66, 72), "sand": (212, 186, 140), "mustard": (208, 168, 40),
    "rust": (180, 82, 30), "lilac": (190, 160, 220), "teal": (10, 128, 128), "lemon": (248, 238, 84),
    "cobalt": (10, 72, 170), "crimson": (200, 20, 50),
}
ALL_COLOURS = {**COLOURS, **BRAND_COLOURS}

# materials that the generator only uses as brand names: textures of their own (see _brand_textures)
BRAND_MATERIALS = ("denim", "velvet", "suede", "tweed", "satin", "corduroy", "mohair", "flannel")

# everyday garment words -> the generator's silhouettes (its nouns, their synonyms, garment brand words)
GARMENT_WORDS = {
    "t-shirt": "tee", "tee": "tee", "sweater": "sweater", "jumper": "sweater", "cardigan": "sweater",
    "camisole": "camisole", "blouse": "blouse", "trousers": "trousers", "slacks": "trousers",
    "shorts": "shorts", "skirt": "skirt", "overcoat": "overcoat", "parka": "parka", "hoodie": "parka",
    "blazer": "blazer", "tuxedo": "blazer", "sundress": "sundress", "kaftan": "kaftan", "poncho": "kaftan",
    "sneakers": "sneaker", "brogues": "brogue", "sandal": "brogue", "backpack": "backpack", "duffel": "duffel",
}
# everyday group words: the generator's plain category values, in the sense they have on any web page
GROUP_WORDS = {c.plain.lower(): tuple(s.shape for s in c.subs) for c in CATALOGUE}

# words whose everyday meaning is neither a colour, a texture nor a garment: the generator's plain-noun
# brands, its "ordinary" category and subcategory values, and the fit words read as ordinary adjectives
ICON_WORDS = (
    "arrow", "goose", "diesel", "anchor", "falcon", "pilot", "canyon", "glacier", "harbour", "maple",
    "pebble", "thunder", "ember", "compass", "bikini", "mitten", "beret",
    "top", "bottom", "shell", "slip", "sole", "case",
    "tank", "polo", "trunk", "wrap", "trench", "puffer", "bomber", "shift", "sheath", "trainer", "flat",
    "pack", "clutch",
    "relaxed", "loose", "straight", "regular",
)

GARMENT_CAPTIONS = (
    "a {colour} {material} {noun}", "a {noun} in {colour}", "{colour} {noun}", "a {noun} made of {material}",
    "a photo of a {colour} {noun}", "{material} {noun}", "a {noun}", "this {noun} is {colour}",
    "a piece of {group} in {colour}", "{colour} {material}",
)
ICON_CAPTIONS = (
    "a {colour} {noun}", "a drawing of a {noun}", "an icon of a {noun}", "a {noun}", "{noun} in {colour}",
    "the {noun} is {colour}", "a picture of a {colour} {noun}",
)


@dataclass(frozen=True)
class Scene:
    """What one general image shows; `kind` is "garment" or "icon"."""
    kind: str
    noun: str  # the word the caption uses for the thing
    shape: str  # silhouette name (garments) or the icon word
    colour: str
    material: str  # texture name ("" for icons, which are flat)
    caption: str


def _with_article(caption: str) -> str:
    words = caption.split(" ")
    for i, w in enumerate(words[:-1]):
        if w == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def draw_scene(rng, group_of: dict) -> Scene:
    """Sample one scene and its caption: two thirds garments, one third icons."""
    colour = list(ALL_COLOURS)[int(rng.integers(len(ALL_COLOURS)))]
    if rng.random() < 2 / 3:
        noun = list(GARMENT_WORDS)[int(rng.integers(len(GARMENT_WORDS)))]
        materials = MATERIALS + BRAND_MATERIALS
        material = materials[int(rng.integers(len(materials)))]
        template = GARMENT_CAPTIONS[int(rng.integers(len(GARMENT_CAPTIONS)))]
        caption = template.format(colour=colour, material=material, noun=noun, group=group_of[GARMENT_WORDS[noun]])
        return Scene("garment", noun, GARMENT_WORDS[noun], colour, material, _with_article(caption))
    noun = ICON_WORDS[int(rng.integers(len(ICON_WORDS)))]
    template = ICON_CAPTIONS[int(rng.integers(len(ICON_CAPTIONS)))]
    return Scene("icon", noun, noun, colour, "", _with_article(template.format(colour=colour, noun=noun)))


# ---------------------------------------------------------------------------------------------
# pixels

def _brand_textures(size: int) -> dict:
    """Textures of the materials the generator names only as brands, (P, P) float32 around 1."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    k = max(size / 64.0, 1.0)
    speckle = np.random.default_rng(7).random((size, size))
    tex = {
        "denim": 1 - 0.2 * (((x + 2 * y) // (2 * k)) % 2),  # twill diagonal
        "velvet": 0.75 + 0.4 * np.abs(np.sin(y * np.pi / size)),  # sheen across the pile
        "suede": 0.9 + 0.12 * np.sin(x / (5 * k)) * np.cos(y / (4 * k)),  # soft mottling
        "tweed": 1 - 0.3 * (speckle > 0.8),  # flecks
        "satin": 0.7 + 0.5 * ((x - y) % (size / 2) < size / 6),  # broad glossy bands
        "corduroy": 1 - 0.3 * ((x // (2 * k)) % 2),  # vertical wales
        "mohair": 0.85 + 0.3 * speckle,  # fuzz
        "flannel": 1 - 0.18 * (((x // (6 * k)) % 2) + ((y // (6 * k)) % 2)),  # plaid
    }
    return {m: t.astype(np.float32) for m, t in tex.items()}


def icon_shape(word: str) -> tuple:
    """The word's icon as a shape table entry: 2 to 4 polygons and ellipses placed by a seed taken
    from the word, so the same word always draws the same thing."""
    rng = np.random.default_rng(zlib.crc32(word.encode()))
    primitives = []
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.12, 0.28)
        if rng.random() < 0.6:  # a polygon of 3 to 7 corners around (cx, cy)
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = r * rng.uniform(0.5, 1.0, n)
            primitives.append(Polygon(tuple((float(cx + q * np.cos(a)), float(cy + q * np.sin(a)))
                                            for a, q in zip(angles, radii))))
        else:
            rx, ry = r * rng.uniform(0.4, 1.0, 2)
            primitives.append(Ellipse(((float(cx - rx), float(cy - ry)), (float(cx + rx), float(cy + ry)))))
    return tuple(primitives)


ICONS = {word: icon_shape(word) for word in ICON_WORDS}


class Renderer:
    """Draws scenes at one size with the product generator's primitives; textures computed once."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.textures = {**material_textures(size, np.random.default_rng([seed, 2])), **_brand_textures(size)}
        self.flat = np.ones((size, size), np.float32)

    def __call__(self, scene: Scene, rng) -> np.ndarray:
        """(P, P, 3) uint8 on white, at a random scale and place (as a photo on a web page would be)."""
        colour = np.asarray(ALL_COLOURS[scene.colour], np.float32) + rng.normal(0, 6, 3)
        if scene.kind == "garment":
            masks = draw_shape(SILHOUETTES[scene.shape], self.size, float(rng.uniform(0.8, 1.2)))
            image = paint(masks, colour, self.textures[scene.material])
        else:
            image = paint(draw_shape(ICONS[scene.shape], self.size), colour, self.flat)
        return _place(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), self.size, rng)


def _place(image: Image.Image, size: int, rng) -> np.ndarray:
    """Shrink by up to a quarter and paste at a random offset on white; sometimes mirror."""
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    side = int(round(size * rng.uniform(0.75, 1.0)))
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    offset = rng.integers(0, size - side + 1, 2)
    canvas.paste(image.resize((side, side), Image.BILINEAR), (int(offset[0]), int(offset[1])))
    return np.asarray(canvas)


@dataclass
class Corpus:
    """Images (N, P, P, 3) uint8 and their captions; `scenes` says what each image shows."""
    images: np.ndarray
    captions: list
    scenes: list


def make_corpus(n: int, size: int, seed: int, split: str = "train", progress: bool = True) -> Corpus:
    """`n` scenes of one split, deterministic by (seed, split); the held-out split is another draw."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng([seed, 100, 0 if split == "train" else 1])
    renderer = Renderer(size, seed)
    group_of = {shape: group for group, shapes in GROUP_WORDS.items() for shape in shapes}
    scenes = [draw_scene(rng, group_of) for _ in range(n)]
    images = np.empty((n, size, size, 3), np.uint8)
    for i, scene in enumerate(tqdm(scenes, desc=f"general corpus ({split})", disable=not progress, leave=False)):
        images[i] = renderer(scene, rng)
    return Corpus(images=images, captions=[s.caption for s in scenes], scenes=scenes)
