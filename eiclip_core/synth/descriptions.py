"""A product's name, description and composition, written with the exact span of every entity mention.

The writers take a product's sampled attributes (product.Attributes) and an RNG; each mention is
recorded as [start, end, type, value] while the text is built, so the ground truth is exact by
construction. No fixed phrase below contains an entity value as a word (tests/test_synth.py checks
the whole text), so the recorded mentions are all the mentions there are.
"""
from eiclip_core.synth.world import FIT_ALONE, MATERIALS
from eiclip_core.data.product_text import normalise_value

# name details and description sentences; none contains an entity value as a word (tested)
NAME_DETAILS = ("Logo", "Appliqué", "Zip", "Pocket", "Embroidered", "Ribbed", "Piqué", "Graphic")
DETAIL_SENTENCES = {
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
# optional sentences that name one entity ("{}" is the mention)
ENTITY_SENTENCES = {
    "brand": ["Designed by {}.", "By {}.", "A signature piece from {}."],
    "fit": ["Cut for a {} fit.", "{} fit throughout.", "{} silhouette."],
    "subcategory": ["Part of the {} edit.", "Shop more {}."],
    "category": ["Listed under {}.", "From the {} collection."],
}


class MentionedText:
    """A string built from pieces; pieces that name an entity are recorded as [start, end, type, value]."""

    def __init__(self):
        self.parts, self.mentions, self.length = [], [], 0

    def add(self, piece: str, kind: str = None, value: str = None) -> "MentionedText":
        if kind:
            self.mentions.append([self.length, self.length + len(piece), kind, value])
        self.parts.append(piece)
        self.length += len(piece)
        return self

    def says(self, kind: str) -> bool:
        """Whether some piece so far mentions an entity of this type."""
        return any(mention[2] == kind for mention in self.mentions)

    def __str__(self) -> str:
        return "".join(self.parts)


def add_fit(text: MentionedText, fit: str, rng, confounding: float, title: bool, capital: bool) -> None:
    """Write a fit mention: "relaxed-fit" / "relaxed fit" / bare "relaxed" (bare more often when confounded)."""
    p_bare = 0.5 + 0.5 * confounding if fit in FIT_ALONE else 0.6 * confounding
    word = fit.capitalize() if (title or capital) else fit
    text.add(word, "fit", fit)
    if rng.random() >= p_bare:
        text.add("-Fit" if title else rng.choice(["-fit", " fit"]))


def add_garment_noun(text: MentionedText, attributes, title: bool) -> None:
    """The garment noun, a mention of the subcategory ("bomber" for BOMBERS, "trousers" for TROUSERS)."""
    text.add(attributes.noun if title else attributes.noun.lower(), "subcategory",
             normalise_value(attributes.subcategory_value))


def composition_text(main: str, rng) -> str:
    """The composition column: main material alone, blended with a second, or a shell and a lining."""
    others = [m for m in MATERIALS if m not in (main, "leather")]
    form = rng.random()
    if form < 0.5:
        return f"100% {main}."
    share = int(rng.choice([55, 60, 65, 70, 80, 85, 90, 95, 97]))
    second = others[int(rng.integers(len(others)))]
    if form < 0.8:
        return f"{share}% {main}, {100 - share}% {second}."
    lining = others[int(rng.integers(len(others)))]
    return f"Shell: {share}% {main}, {100 - share}% {second}. Lining: 100% {lining}."


def product_name(attributes, confounding: float, rng) -> MentionedText:
    """Title case: colour [fit] [material | detail] noun, e.g. "Red Relaxed-Fit Cotton Tee"."""
    fit, material = attributes.fit, attributes.material
    name = MentionedText().add(attributes.colour.capitalize() + " ")
    form = int(rng.integers(5))
    if fit and form in (1, 4):
        add_fit(name, fit, rng, confounding, title=True, capital=True)
        name.add(" ")
    if form in (2, 4):
        name.add(material.capitalize(), "composition", material).add(" ")
    elif form == 3:
        name.add(NAME_DETAILS[int(rng.integers(len(NAME_DETAILS)))] + " ")
    add_garment_noun(name, attributes, title=True)
    return name


def product_description(attributes, name: MentionedText, confounding: float, rng) -> MentionedText:
    """An opening sentence, then detail sentences and optional brand / fit / category sentences in a
    random order. A fit or material the name already gave is not repeated."""
    description = MentionedText()
    brand_first, fit_said = _opening_sentence(description, attributes, name, confounding, rng)
    details = DETAIL_SENTENCES["LEGWEAR" if attributes.category.plain == "LEGWEAR"
                               else attributes.category.department]
    sentences = list(rng.choice(details, size=int(rng.integers(1, 4)), replace=False))
    fit = attributes.fit
    extra = []
    if not brand_first and rng.random() < 0.35:
        extra.append(("brand", str(rng.choice(ENTITY_SENTENCES["brand"]))))
    if fit and not fit_said and rng.random() < 0.5:
        extra.append(("fit", str(rng.choice(ENTITY_SENTENCES["fit"]))))
    if rng.random() < 0.45:
        extra.append(("subcategory", str(rng.choice(ENTITY_SENTENCES["subcategory"]))))
    if rng.random() < 0.3:
        extra.append(("category", str(rng.choice(ENTITY_SENTENCES["category"]))))
    items = [("detail", s) for s in sentences] + extra
    for position in rng.permutation(len(items)):
        kind, sentence = items[position]
        description.add(" ")
        if kind == "detail":
            description.add(sentence)
        else:
            _add_entity_sentence(description, attributes, kind, sentence)
    return description


def _opening_sentence(text: MentionedText, attributes, name: MentionedText, confounding: float, rng) -> tuple:
    """"[Brand] [fit] [material] noun in colour[ material]."; returns (brand came first, fit was said)."""
    brand, fit, material = attributes.brand, attributes.fit, attributes.material
    fit_said = name.says("fit")
    brand_first = rng.random() < 0.35
    if brand_first:
        text.add(brand, "brand", normalise_value(brand)).add(" ")
    if fit and not fit_said and rng.random() < 0.6:
        add_fit(text, fit, rng, confounding, title=False, capital=not brand_first)
        text.add(" ")
        fit_said = True
    material_here = not name.says("composition") and rng.random() < 0.6
    if material_here and rng.random() < 0.5:
        text.add(material if text.length else material.capitalize(), "composition", material).add(" ")
        material_here = False
    add_garment_noun(text, attributes, title=text.length == 0)
    text.add(f" in {attributes.colour}")
    if material_here:
        text.add(" ").add(material, "composition", material)
    text.add(".")
    return brand_first, fit_said


def _add_entity_sentence(text: MentionedText, attributes, kind: str, template: str) -> None:
    """One of ENTITY_SENTENCES with its mention in place of "{}"."""
    before, after = template.split("{}")
    text.add(before)
    if kind == "brand":
        text.add(attributes.brand, "brand", normalise_value(attributes.brand))
    elif kind == "fit":
        text.add(attributes.fit if before else attributes.fit.capitalize(), "fit", attributes.fit)
    elif kind == "subcategory":
        value = attributes.subcategory_value
        text.add(value.title(), "subcategory", normalise_value(value))
    else:
        value = attributes.category_value
        text.add(value.title(), "category", normalise_value(value))
    text.add(after)


def joined_mentions(name: MentionedText, description: MentionedText, text: str) -> list:
    """The mentions of name and description as spans of the product text that joins them."""
    shift = text.index(str(description))
    return name.mentions + [[start + shift, end + shift, kind, value]
                            for start, end, kind, value in description.mentions]

