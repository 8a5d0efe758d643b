"""A Fashion-Gen-like data set, deterministic by seed, that makes EI-CLIP's premise real (`eiclip synth`).

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


Modules, one job each (reuse them for other generated data):
    world.py    vocabularies, the catalogue, and one data set's entity values (World)
    descriptions.py  names, descriptions and compositions written with their mention spans
    render.py   rendering primitives: shapes as tables, textures, fills, glyphs, views
    product.py  one product: sampled attributes, metadata, text, and its images
    files.py    train.h5 / validation.h5 / ground_truth.json, written as one set: generate,
                generate_unless_present, is_complete, load_ground_truth
    general_corpus.py  the general-domain images and captions the default backbone is pretrained on

Every size is an argument: `generate(out, "smoke", seed=0, confounding=0.8, image_size=64, n_train=256,
n_val=128)`. The command `eiclip synth --out data/smoke --profile smoke` (a few seconds; or `--profile
quick`) takes them from a profile (eiclip_core.pipeline.synth_command).
"""
from eiclip_core.synth.files import generate, generate_unless_present, load_ground_truth

__all__ = ["generate", "generate_unless_present", "load_ground_truth"]
