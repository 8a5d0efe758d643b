"""Tables of notebook 01 (data exploration), for generated or real Fashion-Gen files.

Kept here, not in the notebook, so the notebook stays a thin list of calls and the same summaries
serve the README and tests. Its figures are in eiclip_core.figures.data.
"""
import numpy as np
import pandas as pd

from eiclip_core.data.product_text import normalise_value
from eiclip_core.data.text_tower import text_tower_vocabulary

ENTITY_COLUMNS = ("brand", "category", "subcategory", "season")


def split_summary(splits: dict) -> pd.DataFrame:
    """One row per split: products, images (views), views per product, distinct entity values."""
    rows = []
    for name, ds in splits.items():
        p = ds.products
        views = ds.n_views
        rows.append({"split": name, "products": len(p), "images": int(views.sum()),
                     "views/product": round(float(views.mean()), 2), "min views": int(views.min()),
                     "max views": int(views.max()),
                     **{f"{c} values": int(p[c].nunique()) for c in ENTITY_COLUMNS},
                     "text words (median)": int(np.median(p.text.str.split().str.len()))})
    return pd.DataFrame(rows).set_index("split")


def ordinary_word_values(products: pd.DataFrame, ground_truth: dict = None, vocabulary: set = None) -> dict:
    """Entity values that are ordinary English words: from the generator's ground truth when given,
    else by a simple check: every word of the value is a whole word of the text tower's vocabulary
    (so the pretrained encoder has a general-English meaning for it). Values normalised, sorted."""
    if ground_truth is not None:
        return {t: list(v) for t, v in ground_truth["ordinary_word_values"].items()}
    vocabulary = text_tower_vocabulary() if vocabulary is None else vocabulary
    out = {}
    for col in ("brand", "category", "subcategory"):
        values = sorted({normalise_value(v) for v in products[col]} - {""})
        out[col] = [v for v in values if all(w in vocabulary for w in v.replace("-", " ").split())]
    return out


def ordinary_share_table(products: pd.DataFrame, ordinary: dict) -> pd.DataFrame:
    """Per entity type: distinct values, how many are ordinary words, and the share of products carrying one."""
    rows = []
    for col, values in ordinary.items():
        if col not in products:
            continue
        norm = products[col].map(normalise_value)
        rows.append({"type": col, "values": int(norm.nunique()), "ordinary-word values": len(values),
                     "products with one (%)": round(100.0 * float(norm.isin(values).mean()), 1),
                     "examples": ", ".join(values[:8])})
    return pd.DataFrame(rows).set_index("type")


def mention_rates(ground_truth: dict) -> pd.DataFrame:
    """Per split and entity type: % of products whose text mentions their value (generated data)."""
    rows = []
    for split, products in ground_truth["splits"].items():
        for t in ground_truth["mention_types"]:
            having = [p for p in products if t in p["entities"]]
            said = sum(any(m[2] == t for m in p["mentions"]) for p in having)
            rows.append({"split": split, "type": t, "products": len(having),
                         "mentioned (%)": round(100.0 * said / max(len(having), 1), 1)})
    return pd.DataFrame(rows).pivot(index="type", columns="split", values="mentioned (%)")
