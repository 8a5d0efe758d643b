"""Figures of notebooks 01 (data exploration) and 02 (entity mining)."""
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eiclip_core.data.tables import ENTITY_COLUMNS
from eiclip_core.figures.text import literal


def _bars(ax, counts: pd.Series, title: str, top: int, by_count: bool = True):
    counts = counts.sort_values(ascending=False).head(top) if by_count else counts.sort_index(key=_season_key)
    counts = counts[::-1]
    ax.barh([literal(textwrap.shorten(str(i), 22)) for i in counts.index], counts.values, color="#4c72b0")
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
    """A grid: one row per product (drawn with the seed), its views, and its text beside them.

    Returns (figure, indices of the products shown)."""
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
        axes[r, -1].text(0, 0.5, literal(wrapped), fontsize=7,
                         va="center", family="monospace")
    fig.tight_layout()
    return fig, idx


def priors_figure(art, k: int = 10):
    """Bar charts of the prior P_t(z) of the k most frequent values of each model type (+ other) of an
    entity artifact; confounding-prone values in red."""
    n = len(art.types)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, t in zip(axes.flat, art.types):
        keep = list(range(min(k, len(art.values[t]) - 1))) + [len(art.values[t]) - 1]
        colours = ["#d62828" if art.prone[t][i] else "#457b9d" for i in keep]
        ax.barh([literal(art.values[t][i]) for i in keep][::-1], art.prior[t][keep][::-1], color=colours[::-1])
        ax.set_title(f"{t} ({len(art.values[t])} values)")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Prior P(z) per entity type (red: confounding-prone)", fontsize=10)
    fig.tight_layout()
    return fig
