"""Mappings of two public catalogs whose layouts are documented (`eiclip import-catalog --preset NAME`).

hm:  the H&M Personalized Fashion Recommendations `articles.csv`, one row per article (a product in
     one colour); images at `images/<first 3 digits>/<10-digit id>.jpg`, so `--images` is that
     `images` folder. Articles of one `product_code` (colours of one product) stay in one split.
abo: Amazon Berkeley Objects listings (`listings/metadata/listings_*.json.gz`, JSON Lines), text
     fields as lists of language-tagged values: English is kept (`en_US`, else any `en_*` tag), other
     languages are not imported. Image ids (`main_image_id`, `other_image_id`) are resolved through
     `images/metadata/images.csv(.gz)` to `images/small/<path>`, so `--images` is ABO's `images` folder.

Each preset is a Mapping (catalog.py) plus a `prepare` step that derives the columns the mapping
reads (image paths, split groups) and marks the rows it cannot resolve. Optional columns a table
lacks are added empty: a listing without `material` has no composition, not an error.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from eiclip_core.data.catalog import Mapping, cell_values, read_table
from eiclip_core.errors import KitError


@dataclass(frozen=True)
class Preset:
    mapping: Mapping
    required: tuple  # columns the table must have
    optional: tuple  # columns added empty when the table lacks them
    prepare: Callable  # (table, images_dir) -> (table with derived columns, {row index: problem})
    derived: dict  # derived column -> where it comes from (shown in import_report.json)


# ------------------------------------------------------------------------------------------------ H&M


def _hm_prepare(table: pd.DataFrame, images_dir: Path):
    problems, paths = {}, []
    for i, article in enumerate(table["article_id"].map(lambda v: "".join(cell_values(v)))):
        if article.isascii() and article.isdigit() and len(article) <= 10:
            padded = article.zfill(10)
            paths.append(f"{padded[:3]}/{padded}.jpg")
        else:
            paths.append("")
            problems[i] = f"article_id '{article}' is not a number of at most 10 digits"
    group = table["product_code"].where(table["product_code"].map(bool), table["article_id"])
    return table.assign(_image=paths, _group=group), problems


HM = Preset(
    mapping=Mapping(
        product_id="article_id", image=("_image",), split_group="_group", source="preset hm",
        fields={"name": ("colour_group_name", "prod_name"), "description": ("detail_desc",),
                "category": ("product_group_name",), "subcategory": ("product_type_name",),
                "gender": ("index_name",), "department": ("department_name",)}),
    required=("article_id", "prod_name"),
    optional=("product_code", "colour_group_name", "detail_desc", "product_group_name", "product_type_name",
              "index_name", "department_name"),
    prepare=_hm_prepare,
    derived={"_image": "article_id -> <first 3 digits>/<10-digit article_id>.jpg",
             "_group": "product_code (the colours of one product), else article_id"},
)


# ------------------------------------------------------------------------------------------------ ABO


def _abo_image_paths(images_dir: Path) -> tuple:
    """image_id -> 'small/<path>' from ABO's images metadata table, and the table's path."""
    for name in ("images.csv", "images.csv.gz"):
        meta = images_dir / "metadata" / name
        if meta.is_file():
            table = read_table(meta)
            missing = {"image_id", "path"} - set(table.columns)
            if missing:
                raise KitError(f"{meta}: no column(s) {', '.join(sorted(missing))} (ABO's images.csv has "
                               "image_id, height, width, path)")
            return dict(zip(table["image_id"], "small/" + table["path"])), meta
    raise KitError(f"{images_dir / 'metadata' / 'images.csv'}: not found (the abo preset resolves image ids "
                   "through it: give --images ABO's 'images' folder)")


def _last_node(value) -> str:
    """The leaf of a listing's first browse node: '/Categories/Shoes/Sneakers' -> 'Sneakers'."""
    nodes = value if isinstance(value, list) else []
    name = next((n.get("node_name") for n in nodes if isinstance(n, dict) and n.get("node_name")), "")
    return str(name).rstrip("/").rsplit("/", 1)[-1]


def _abo_prepare(table: pd.DataFrame, images_dir: Path):
    known, meta = _abo_image_paths(images_dir)
    problems, paths = {}, []
    for i in range(len(table)):
        ids = cell_values(table["main_image_id"].iat[i]) + cell_values(table["other_image_id"].iat[i])
        unknown = [x for x in ids if x not in known]
        if unknown:
            problems[i] = f"image id '{unknown[0]}' is not in {meta}"
        paths.append([known[x] for x in ids if x in known])
    return table.assign(_images=paths, _node=table["node"].map(_last_node)), problems


ABO = Preset(
    mapping=Mapping(
        product_id="item_id", image=("_images",), language="en_US", source="preset abo",
        fields={"name": ("item_name",), "description": ("bullet_point",), "brand": ("brand",),
                "category": ("product_type",), "subcategory": ("_node",), "composition": ("material",)}),
    required=("item_id", "item_name", "main_image_id"),
    optional=("other_image_id", "bullet_point", "brand", "product_type", "material", "node"),
    prepare=_abo_prepare,
    derived={"_images": "main_image_id, other_image_id -> small/<path> through metadata/images.csv",
             "_node": "node: the last part of the first node_name"},
)

PRESETS = {"hm": HM, "abo": ABO}


def prepare_preset(name: str, table: pd.DataFrame, images_dir: Path, table_path) -> tuple:
    """(table ready for the preset's mapping, {row index: problem}, the mapping)."""
    preset = PRESETS[name]
    missing = [c for c in preset.required if c not in table.columns]
    if missing:
        raise KitError(f"{table_path}: no column '{missing[0]}', which the {name} preset needs "
                       f"(does the table follow the {name} layout? see README, 'Your own catalog')")
    table = table.assign(**{c: None for c in preset.optional if c not in table.columns})
    table, problems = preset.prepare(table, images_dir)
    return table, problems, preset.mapping
