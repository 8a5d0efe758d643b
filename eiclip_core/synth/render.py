"""Rendering primitives: shapes as data, textures, fills, marks and views, as pure functions.

Every function here depends only on its arguments (and the numpy Generator it is given), so another
generator (a general-domain corpus, a test) can draw the same things and get the same pixels:

    masks = draw_shape(SILHOUETTES["tee"], size=64, width=1.1)
    image = paint(masks, fill_rgb, material_textures(64, rng)["wool"])
    image = draw_glyph(image, glyph, ink_rgb)
    views = product_views(image, n_views=3, rng=rng)

Shapes are tables of primitives in unit coordinates ((0, 0) top left, (1, 1) bottom right) on one
of two layers: "body" (the filled outline) and "detail" (seams, collars, buttons: drawn darker on
top of the fill). `width` stretches x about the centre line (0.5), which is how a fit is drawn.
Masks are drawn at twice the size and box-filtered: cheap anti-aliasing.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BODY, DETAIL = "body", "detail"

# Primitives: frozen data. Each draws itself with a PIL ImageDraw `pen` on a square canvas of
# `canvas` pixels; `to_pixels` maps unit points to canvas pixels, applying the width stretch.


@dataclass(frozen=True)
class Polygon:
    points: tuple  # ((x, y), ...) in unit coordinates
    layer: str = BODY

    def draw(self, pen, to_pixels, canvas: int):
        pen.polygon(to_pixels(self.points), fill=255)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle from (x0, y0) to (x1, y1), drawn as a four-point polygon."""
    x0: float
    y0: float
    x1: float
    y1: float
    layer: str = BODY

    def draw(self, pen, to_pixels, canvas: int):
        corners = ((self.x0, self.y0), (self.x1, self.y0), (self.x1, self.y1), (self.x0, self.y1))
        pen.polygon(to_pixels(corners), fill=255)


@dataclass(frozen=True)
class Ellipse:
    box: tuple  # ((x0, y0), (x1, y1)): the bounding box
    layer: str = BODY

    def draw(self, pen, to_pixels, canvas: int):
        pen.ellipse(to_pixels(self.box), fill=255)


@dataclass(frozen=True)
class RoundedRect:
    box: tuple  # ((x0, y0), (x1, y1))
    radius: float  # corner radius, a fraction of the canvas side (not stretched by the width)
    layer: str = BODY

    def draw(self, pen, to_pixels, canvas: int):
        pen.rounded_rectangle(to_pixels(self.box), radius=self.radius * canvas, fill=255)


@dataclass(frozen=True)
class Arc:
    """A handle or strap: the outline of an ellipse from `start` to `end` degrees, 1/40 of the canvas thick."""
    box: tuple  # ((x0, y0), (x1, y1)) of the full ellipse
    start: float
    end: float
    layer: str = BODY

    def draw(self, pen, to_pixels, canvas: int):
        pen.arc(to_pixels(self.box), self.start, self.end, fill=255, width=max(2, canvas // 40))


def _upper_body(top: float, bottom: float, long_sleeves: bool) -> tuple:
    """Torso and two sleeves shared by every upper garment; sleeves end at the wrist or above the waist."""
    cuff = 0.8 if long_sleeves else 0.45
    return (Rect(0.3, top, 0.7, bottom),
            Polygon(((0.3, top), (0.14, cuff - 0.06), (0.2, cuff), (0.3, top + 0.16))),
            Polygon(((0.7, top), (0.86, cuff - 0.06), (0.8, cuff), (0.7, top + 0.16))))


def _trouser_legs(hem: float) -> tuple:
    """Waistband and two legs down to `hem`, with the waistband seam as detail."""
    return (Rect(0.32, 0.14, 0.68, 0.24),
            Polygon(((0.32, 0.24), (0.5, 0.24), (0.49, 0.36), (0.47, hem), (0.3, hem))),
            Polygon(((0.5, 0.24), (0.68, 0.24), (0.7, hem), (0.53, hem), (0.51, 0.36))),
            Rect(0.32, 0.14, 0.68, 0.17, DETAIL))


# shape name -> primitives: one silhouette per subcategory (world.Sub.shape)
SILHOUETTES = {
    "tee": _upper_body(0.25, 0.84, long_sleeves=False) + (
        Ellipse(((0.43, 0.25 - 0.03), (0.57, 0.25 + 0.05)), DETAIL),),  # crew neck
    "sweater": _upper_body(0.25, 0.84, long_sleeves=True) + (
        Rect(0.3, 0.84 - 0.05, 0.7, 0.84, DETAIL),),  # ribbed hem
    "blouse": _upper_body(0.25, 0.84, long_sleeves=False) + (
        Polygon(((0.42, 0.25), (0.5, 0.25 + 0.12), (0.58, 0.25)), DETAIL),),  # short placket
    "blazer": _upper_body(0.25, 0.84, long_sleeves=True) + (
        Polygon(((0.42, 0.25), (0.5, 0.25 + 0.3), (0.58, 0.25)), DETAIL),),  # deep lapels
    "overcoat": _upper_body(0.18, 0.95, long_sleeves=True) + tuple(
        Ellipse(((0.48, y), (0.52, y + 0.03)), DETAIL) for y in (0.35, 0.5, 0.65, 0.8)),  # buttons
    "parka": _upper_body(0.26, 0.86, long_sleeves=True) + (
        Ellipse(((0.38, 0.08), (0.62, 0.34))),  # hood
        Rect(0.3, 0.55, 0.7, 0.57, DETAIL)),  # drawstring
    "camisole": (Rect(0.36, 0.35, 0.64, 0.86), Rect(0.39, 0.18, 0.41, 0.36), Rect(0.59, 0.18, 0.61, 0.36)),
    "trousers": _trouser_legs(0.93),
    "shorts": _trouser_legs(0.55),
    "skirt": (Polygon(((0.38, 0.25), (0.62, 0.25), (0.76, 0.78), (0.24, 0.78))),
              Rect(0.38, 0.25, 0.62, 0.29, DETAIL)),
    "sundress": (Rect(0.4, 0.24, 0.6, 0.46),
                 Polygon(((0.4, 0.46), (0.6, 0.46), (0.8, 0.92), (0.2, 0.92))),
                 Rect(0.41, 0.12, 0.43, 0.25), Rect(0.57, 0.12, 0.59, 0.25),
                 Rect(0.4, 0.44, 0.6, 0.47, DETAIL)),
    "kaftan": (Rect(0.12, 0.2, 0.88, 0.44), Rect(0.3, 0.2, 0.7, 0.93),
               Polygon(((0.45, 0.2), (0.5, 0.32), (0.55, 0.2)), DETAIL)),
    "sneaker": (Polygon(((0.14, 0.72), (0.14, 0.56), (0.44, 0.5), (0.6, 0.4), (0.86, 0.58), (0.86, 0.72))),
                Rect(0.14, 0.68, 0.86, 0.74, DETAIL), Rect(0.14, 0.68, 0.86, 0.74)),  # sole
    "brogue": (Polygon(((0.1, 0.7), (0.14, 0.6), (0.52, 0.57), (0.9, 0.63), (0.92, 0.7))),
               Rect(0.1, 0.69, 0.92, 0.72, DETAIL), Rect(0.1, 0.69, 0.92, 0.72)),
    "backpack": (RoundedRect(((0.28, 0.22), (0.72, 0.88)), 0.08), Arc(((0.4, 0.1), (0.6, 0.3)), 180, 360),
                 Rect(0.35, 0.6, 0.65, 0.8, DETAIL)),  # front pocket
    "duffel": (RoundedRect(((0.12, 0.44), (0.88, 0.78)), 0.1), Arc(((0.3, 0.28), (0.7, 0.6)), 180, 360),
               Rect(0.12, 0.58, 0.88, 0.6, DETAIL)),  # zip
}


def draw_shape(primitives, size: int, width: float = 1.0) -> tuple:
    """(body, detail) coverage masks of a shape: float32 (size, size) in [0, 1].

    `primitives` is a table entry such as SILHOUETTES["parka"] (or any sequence of the primitive
    classes above); `width` stretches horizontal offsets from the centre line (a fit's width)."""
    canvas = 2 * size
    layers = {BODY: Image.new("L", (canvas, canvas), 0), DETAIL: Image.new("L", (canvas, canvas), 0)}
    pens = {layer: ImageDraw.Draw(image) for layer, image in layers.items()}

    def to_pixels(points):
        return [((0.5 + (x - 0.5) * width) * canvas, y * canvas) for x, y in points]

    for primitive in primitives:
        primitive.draw(pens[primitive.layer], to_pixels, canvas)
    return tuple(np.asarray(layers[layer].resize((size, size), Image.BOX), dtype=np.float32) / 255.0
                 for layer in (BODY, DETAIL))


def material_textures(size: int, rng) -> dict:
    """One multiplicative texture per material, (size, size) float32 around 1: visible, fixed per material.

    cotton: fine noise; wool: a checked knit; linen: horizontal slubs; silk: a diagonal sheen;
    polyester: a grid; leather: a smooth grain; viscose: diagonal twill; polyamide: a weave."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = max(size / 64.0, 1.0)  # pattern scale grows with the image, so patterns survive downsizing
    smooth = np.kron(rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)), np.ones((8, 8)))[:size, :size]
    textures = {
        "cotton": 1 + 0.05 * rng.normal(0, 1, (size, size)),
        "wool": 1 + 0.16 * np.sign(np.sin(x * np.pi / (2 * period))) * (np.sin(y * np.pi / (2 * period)) > 0),
        "linen": 1 + 0.15 * np.sign(np.sin(y * np.pi / (1.5 * period))),
        "silk": 0.85 + 0.3 * ((x + y) / (2 * size)),
        "polyester": 1 - 0.22 * ((x % (4 * period) < period) | (y % (4 * period) < period)),
        "leather": 0.8 + 0.08 * smooth,
        "viscose": 1 + 0.15 * np.sign(np.sin((x + y) * np.pi / (3 * period))),
        "polyamide": 1 + 0.15 * np.sign(np.sin(x * np.pi / (3 * period)) * np.sin(y * np.pi / (3 * period))),
    }
    return {material: texture.astype(np.float32) for material, texture in textures.items()}


def season_colour(rgb, season: str, rng) -> np.ndarray:
    """The fill of a colour word in a season: jittered, lighter for SS / darker for FW, tinted by year.

    `season` is "SS<year>" or "FW<year>" with year 2014..2018: later years warmer, earlier cooler."""
    colour = np.asarray(rgb, np.float32) + rng.normal(0, 8, 3)
    if season.startswith("SS"):
        colour = colour * 0.86 + 255 * 0.14  # spring/summer: lighter
    else:
        colour = colour * 0.86  # fall/winter: darker
    year = int(season[2:]) - 2016  # -2..2: warm (later) to cool (earlier) tint
    colour = colour + np.array([7.0, 0.0, -7.0]) * year
    return np.clip(colour, 0, 255)


def paint(masks: tuple, fill_rgb, texture: np.ndarray) -> np.ndarray:
    """A shape on white: (size, size, 3) float image of `masks` (draw_shape's body and detail) filled
    with `fill_rgb` times `texture` (material_textures), details 35% darker."""
    body, detail = masks
    shade = texture * (1.0 - 0.35 * detail)
    filled = np.asarray(fill_rgb)[None, None, :] * shade[..., None]
    return 255.0 * (1 - body[..., None]) + filled * body[..., None]


def draw_glyph(image: np.ndarray, glyph: np.ndarray, ink) -> np.ndarray:
    """A uint8 copy of the float image with a small bool glyph (an icon, such as a brand mark: (3, 3))
    drawn in `ink` in the lower right corner, one cell = 1/16 of the image side, one cell from the edges.

    1/16, not smaller: at 64 pixels and the default 8-pixel patches a mark of 2-pixel cells is not
    recoverable from image features (the linear probe, eiclip_core.evaluation.linear_probe, reads such a brand
    at the majority baseline)."""
    cell = max(1, image.shape[0] // 16)
    pixels = np.kron(glyph, np.ones((cell, cell), bool))
    top, left = (image.shape[i] - pixels.shape[i] - cell for i in (0, 1))
    marked = image.copy()
    marked[top:top + pixels.shape[0], left:left + pixels.shape[1]][pixels] = ink
    return np.clip(marked, 0, 255).astype(np.uint8)


def product_views(image: np.ndarray, n_views: int, rng) -> np.ndarray:
    """(n_views, size, size, 3) uint8: the uint8 image itself, then views that flip it at random and
    scale it by 0.72..1.3: smaller is pasted on white at a random offset, larger is a random crop."""
    size = image.shape[0]
    views = np.empty((n_views, size, size, 3), np.uint8)
    views[0] = image
    original = Image.fromarray(image)
    for view in range(1, n_views):
        shot = original.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else original
        scaled = max(8, int(round(size * float(rng.uniform(0.72, 1.3)))))
        shot = shot.resize((scaled, scaled), Image.BILINEAR)
        if scaled <= size:  # smaller: paste on white at a random offset
            canvas = Image.new("RGB", (size, size), (255, 255, 255))
            canvas.paste(shot, (int(rng.integers(size - scaled + 1)), int(rng.integers(size - scaled + 1))))
        else:  # larger: a crop (detail shot)
            left, top = int(rng.integers(scaled - size + 1)), int(rng.integers(scaled - size + 1))
            canvas = shot.crop((left, top, left + size, top + size))
        views[view] = np.asarray(canvas)
    return views
