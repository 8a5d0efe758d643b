"""One generated product: sampled attributes, its metadata and text with mentions, and its images.

Every attribute is visible in the image (see the package docstring): the Look of a product is the
part of its attributes that render.py draws.
"""
from dataclasses import dataclass

import numpy as np

from eiclip_core.synth import render
from eiclip_core.synth.descriptions import composition_text, joined_mentions, product_description, product_name
from eiclip_core.synth.world import CATALOGUE, COLOURS, FIT_VALUES, FIT_WIDTH, MATERIALS, SEASONS, Cat, Sub, World
from eiclip_core.data.product_text import normalise_value, product_text

_CATEGORY_WEIGHTS = np.array([cat.weight for cat in CATALOGUE])
_CLOTHING_MATERIALS = [0, 1, 2, 3, 4, 6, 7]  # indices into MATERIALS: all but leather
_ACCESSORY_MATERIALS = [0, 4, 7]  # cotton, polyester, polyamide (or leather, half the time)


@dataclass(frozen=True)
class Attributes:
    """What one product is, before it is written or drawn."""
    category_index: int  # into CATALOGUE and World.category_values
    category: Cat
    sub: Sub
    gender: str
    brand_index: int  # into World.brands
    brand: str
    colour: str  # a key of COLOURS: the colour word of the name and the fill of the image
    material: str  # the main material: the composition entity and the texture of the image
    fit: str  # None for shoes and bags
    season: str
    category_value: str
    subcategory_value: str
    noun: str  # the garment noun of names


@dataclass(frozen=True)
class Look:
    """What a product's images show."""
    shape: str  # key of render.SILHOUETTES
    width: float  # horizontal stretch of the silhouette (the fit)
    colour: str
    material: str
    season: str
    brand_index: int


@dataclass(frozen=True)
class Product:
    metadata: dict  # Fashion-Gen columns by short name (name, description, brand, ...) and price
    look: Look
    entities: dict  # entity type -> normalised value
    mentions: list  # [start, end, type, value] spans of product_text(name, description)


def sample_attributes(world: World, rng) -> Attributes:
    """Draw category, subcategory, gender, brand, colour, main material, fit and season."""
    category_index = int(rng.choice(len(CATALOGUE), p=_CATEGORY_WEIGHTS / _CATEGORY_WEIGHTS.sum()))
    category = CATALOGUE[category_index]
    sub = category.subs[int(rng.integers(len(category.subs)))]
    gender = "WOMEN" if sub.women_only or rng.random() < 0.5 else "MEN"
    brand_index = int(rng.choice(len(world.brands), p=world.brand_weights))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if category.department == "CLOTHING":
        material = MATERIALS[int(rng.choice(_CLOTHING_MATERIALS))]
    else:
        material = "leather" if rng.random() < 0.5 else MATERIALS[int(rng.choice(_ACCESSORY_MATERIALS))]
    fit = FIT_VALUES[int(rng.integers(len(FIT_VALUES)))] if category.has_fit else None
    season = SEASONS[int(rng.integers(len(SEASONS)))]
    return Attributes(category_index=category_index, category=category, sub=sub, gender=gender,
                      brand_index=brand_index, brand=world.brands[brand_index], colour=colour,
                      material=material, fit=fit, season=season,
                      category_value=world.category_values[category_index],
                      subcategory_value=world.subcategory_values[sub.shape],
                      noun=world.subcategory_nouns[sub.shape])


def make_product(world: World, rng) -> Product:
    """Sample one product's attributes and write its name and description with recorded mentions."""
    attributes = sample_attributes(world, rng)
    name = product_name(attributes, world.confounding, rng)
    description = product_description(attributes, name, world.confounding, rng)
    name_text, description_text = str(name), str(description)
    entities = {"brand": normalise_value(attributes.brand), "category": normalise_value(attributes.category_value),
                "subcategory": normalise_value(attributes.subcategory_value), "composition": attributes.material,
                "season": normalise_value(attributes.season), "gender": normalise_value(attributes.gender),
                "department": normalise_value(attributes.category.department)}
    if attributes.fit:
        entities["fit"] = attributes.fit
    metadata = {"name": name_text, "description": description_text, "brand": attributes.brand,
                "category": attributes.category_value, "subcategory": attributes.subcategory_value,
                "composition": composition_text(attributes.material, rng), "season": attributes.season,
                "gender": attributes.gender, "department": attributes.category.department,
                "price": float(np.round(np.exp(rng.normal(5.6, 0.6)), 2))}
    look = Look(shape=attributes.sub.shape, width=FIT_WIDTH.get(attributes.fit, 1.0), colour=attributes.colour,
                material=attributes.material, season=attributes.season, brand_index=attributes.brand_index)
    mentions = joined_mentions(name, description, product_text(name_text, description_text))
    return Product(metadata=metadata, look=look, entities=entities, mentions=mentions)


def render_product(look: Look, world: World, textures: dict, size: int, n_views: int, rng) -> np.ndarray:
    """(n_views, size, size, 3) uint8: the product drawn once from its look (silhouette stretched by
    the fit, season-shifted colour, material texture, brand mark), then flipped / scaled / cropped."""
    masks = render.draw_shape(render.SILHOUETTES[look.shape], size, look.width)
    fill = render.season_colour(COLOURS[look.colour], look.season, rng)
    image = render.paint(masks, fill, textures[look.material])
    image = render.draw_glyph(image, world.brand_glyphs[look.brand_index], world.brand_inks[look.brand_index])
    return render.product_views(image, n_views, rng)
