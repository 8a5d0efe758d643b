"""Figures of notebook 05: the confounder made visible (METHOD.md sections 1, 3 to 6).

UMAP (umap-learn) is imported once per process and always run with a fixed random_state and n_jobs=1,
so the same seed draws the same picture. Its neighbours come from scikit-learn's exact search (a
dependency of umap-learn), handed over as `precomputed_knn`: umap-learn's own exact search for small
inputs is numba code compiled on first use, in every fresh process.

umap-learn's other numba kernels (`parallel=True`) are compiled on first use too. `_umap_class` turns on
numba's on-disk cache for them (what `@njit(cache=True)` does), so only the first process on an
environment compiles them; later ones load the machine code.

Tables come with field names and the models' row names (eiclip_core.protocols); a figure labels the rows
it draws (eiclip_core.evaluation.results.row_label).
"""
import sys
import textwrap
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eiclip_core.evaluation.results import row_label
from eiclip_core.figures.text import literal

TYPE_COLOURS = dict(zip(("brand", "category", "subcategory", "composition", "season", "fit"),
                        ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))

_UMAP = None


def _umap_class():
    """umap.UMAP, imported once per process, with numba's disk cache on for umap-learn's kernels. The cache
    lives where numba puts that of `cache=True` functions (umap's __pycache__, else NUMBA_CACHE_DIR or the
    user's cache); where none is writable the kernels are compiled in every process."""
    global _UMAP
    if _UMAP is None:
        import umap
        from numba.core.registry import CPUDispatcher

        kernels = [f for name, module in list(sys.modules.items()) if name.split(".")[0] == "umap"
                   for f in vars(module).values() if isinstance(f, CPUDispatcher)]
        for kernel in kernels:
            try:
                kernel.enable_caching()
            except RuntimeError:  # numba: "cannot cache function ...: no locator available"
                pass
        _UMAP = umap.UMAP
    return _UMAP


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, metric: str = "cosine") -> np.ndarray:
    """2-D UMAP of the rows of x (float32 (N, 2)); same seed, same coordinates (n_jobs=1)."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float32)
    k = max(2, min(n_neighbors, len(x) - 1))
    distances, indices = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(x).kneighbors(x)
    with warnings.catch_warnings():  # tiny inputs make umap warn about its spectral init; harmless
        warnings.simplefilter("ignore")
        reducer = _umap_class()(n_components=2, n_neighbors=k, metric=metric, min_dist=0.1, random_state=seed,
                                n_jobs=1, precomputed_knn=(indices, distances.astype(np.float32), None))
        return reducer.fit_transform(x).astype(np.float32)


# general-word groups (analysis.measures.GENERAL_WORD_GROUPS, in order): light colours and shapes of their own, so
# they read apart from the entity types' saturated circles and crosses; the group's words in a darker tone
WORD_GROUP_STYLES = (("#f2a7d3", "o", "#b0307a"), ("#e5c494", "s", "#8a6a2a"), ("#b7c3e6", "^", "#3f5296"),
                     ("#9fd8c4", "D", "#23745a"), ("#cfcfcf", "v", "#666666"))


def _draw_words(ax, wxy: np.ndarray, words, word_groups) -> None:
    """The general words of one panel, every word named, coloured and shaped by group."""
    for j, group in enumerate(dict.fromkeys(word_groups)):
        fill, marker, ink = WORD_GROUP_STYLES[j % len(WORD_GROUP_STYLES)]
        sel = np.asarray([g == group for g in word_groups])
        ax.scatter(wxy[sel, 0], wxy[sel, 1], s=22, c=fill, marker=marker, label=group, zorder=1)
        for w in np.flatnonzero(sel):
            ax.annotate(words[w], wxy[w], fontsize=6.5, color=ink, xytext=(2, -7), textcoords="offset points")


def _draw_values(ax, pts: np.ndarray, t: str, values: list, prone, chosen: list) -> None:
    """One type's dictionary in one panel: circles, prone values as crosses, the chosen values named."""
    flags = np.asarray(prone, bool)
    colour = TYPE_COLOURS.get(t, "black")
    ax.scatter(pts[~flags, 0], pts[~flags, 1], s=18, c=colour, alpha=0.8, label=t, zorder=2)
    ax.scatter(pts[flags, 0], pts[flags, 1], s=40, c=colour, marker="X", edgecolors="black", linewidths=0.6, zorder=2)
    for ct, ci in chosen:
        if ct == t:
            ax.annotate(literal(values[ci]), pts[ci], fontsize=9, weight="bold", xytext=(4, 4), textcoords="offset points",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colour, "alpha": 0.85}, zorder=3)


def dictionary_figure(d: dict, e: dict, values: dict, prone: dict, chosen: list, words, word_emb,
                      word_groups, seed: int = 0):
    """UMAP of D_t (left) and E_t (right) in one shared 2-D map, among general words coloured by group.

    One UMAP of the union keeps the panels comparable: a value's move from left to right is the EALM's
    rectification. Points are coloured by type; confounding-prone values are drawn as crosses and the
    chosen (type, index) values are named in both panels. word_emb: the general words' embeddings, rows of
    unit length as those of d and e; `word_groups[j]` is the group of words[j]."""
    types = list(d)
    sizes = [len(d[t]) for t in types]
    xy = umap_2d(np.concatenate([np.concatenate([d[t] for t in types]), np.concatenate([e[t] for t in types]),
                                 word_emb]), seed=seed)
    n = sum(sizes)
    starts = np.cumsum([0] + sizes)
    fig, axes = plt.subplots(1, 2, figsize=(16, 8), sharex=True, sharey=True)
    for ax, part, title in zip(axes, (xy[:n], xy[n:2 * n]), ("D_t: entity values, frozen text tower (before)",
                                                             "E_t: rectified by the EALM (after)")):
        _draw_words(ax, xy[2 * n:], words, word_groups)
        for t, start, size in zip(types, starts, sizes):
            _draw_values(ax, part[start:start + size], t, values[t], prone[t], chosen)
        ax.scatter([], [], s=40, c="white", marker="X", edgecolors="black", label="confounding-prone")
        ax.set_title(title)
        ax.set_xlabel("UMAP 1")
    axes[0].set_ylabel("UMAP 2")
    handles, labels = axes[1].get_legend_handles_labels()
    n_groups = len(dict.fromkeys(word_groups))
    axes[1].legend(handles[n_groups:], labels[n_groups:], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9,
                   title="entity type")
    fig.legend(handles[:n_groups], labels[:n_groups], loc="lower center", ncol=n_groups, fontsize=9,
               title="general English words, by meaning", markerscale=1.5)
    fig.suptitle("Entity dictionaries before and after the EALM, among general English words grouped by meaning")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def text_umap_figure(features: dict, labels: dict, seed: int = 0, top: int = 8):
    """Rows = models (features keyed by row name), columns = entity types: UMAP of validation text features
    coloured by the value of the type (the `top` most frequent values; the rest and missing in grey). One
    UMAP per model."""
    models, types = list(features), list(labels)
    fig, axes = plt.subplots(len(models), len(types), figsize=(4.2 * len(types), 3.8 * len(models)),
                             squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    for r, m in enumerate(models):
        xy = umap_2d(features[m], seed=seed)
        for c, t in enumerate(types):
            ax = axes[r, c]
            lab = pd.Series(list(labels[t]), dtype=object)
            frequent = lab[lab.notna() & (lab != "")].value_counts(sort=True).index[:top]
            rest = ~lab.isin(frequent).to_numpy()
            ax.scatter(xy[rest, 0], xy[rest, 1], s=6, c="lightgrey", label="other / missing")
            for j, v in enumerate(sorted(frequent)):
                sel = (lab == v).to_numpy()
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(j % 10), label=literal(str(v)[:18]))
            ax.set_title(f"{row_label(m)}: coloured by {t}")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == len(models) - 1:
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, markerscale=2)
    fig.suptitle("Validation text features (UMAP)")
    fig.tight_layout()
    return fig


def gate_figure(gates: np.ndarray, types, by_group: pd.DataFrame, group_name: str = "category"):
    """Left: distribution of each CESM gate g_t; right: mean g_t per group (heatmap)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    ax1.boxplot([gates[:, j] for j in range(gates.shape[1])], showfliers=False)
    ax1.set_xticks(range(1, len(types) + 1), list(types), rotation=30)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("gate g_t (1 = intervene)")
    ax1.set_title("CESM gates per entity type (validation texts)")
    im = ax2.imshow(by_group.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax2.set_xticks(range(by_group.shape[1]), list(by_group.columns), rotation=30)
    ax2.set_yticks(range(by_group.shape[0]), [literal(str(g)[:24]) for g in by_group.index])
    for (i, j), v in np.ndenumerate(by_group.to_numpy()):
        ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax2.set_title(f"mean gate per {group_name}")
    fig.colorbar(im, ax=ax2, label="mean g_t")
    fig.tight_layout()
    return fig


def attention_figure(examples: list, top: int = 8):
    """One panel per example query: its attention over one dictionary (top values and the query's own
    value) against the prior.

    examples: dicts with keys text, type, values (list), attention (|V|,), prior (|V|,), own (index or -1)."""
    fig, axes = plt.subplots(1, len(examples), figsize=(4.3 * len(examples), 4.2), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        order = np.argsort(-np.asarray(ex["attention"]), kind="stable")[:top]
        if ex["own"] >= 0 and ex["own"] not in order:  # the query's own value is always shown
            order = np.append(order[:top - 1], ex["own"])
        order = order[::-1]
        y = np.arange(len(order))
        ax.barh(y - 0.2, np.asarray(ex["attention"])[order], height=0.4, label="attention a_t")
        ax.barh(y + 0.2, np.asarray(ex["prior"])[order], height=0.4, color="lightgrey", label="prior P_t")
        names = [literal(ex["values"][i]) + (" (own)" if i == ex["own"] else "") for i in order]
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel("weight")
        own = ex["values"][ex["own"]] if ex["own"] >= 0 else "unknown"
        ax.set_title(literal(f"own {ex['type']}: {own}\n" + textwrap.fill(ex["text"][:120], 44)), fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Where the intervention looks: attention over a dictionary for example queries")
    fig.tight_layout()
    return fig


def probe_figure(table: pd.DataFrame, k: int = 10):
    """Bars: % of the top k with the new value before and after the swap, per type and model (the summary of
    eiclip_core.analysis.counterfactual_swap.run_probe, measured on the top k)."""
    types = list(dict.fromkeys(table["type"]))
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(2.6 * len(types) + 2, 4))
    width = 0.8 / (2 * len(models))
    x = np.arange(len(types))
    for j, m in enumerate(models):
        sub = table[table["model"] == m].set_index("type").reindex(types)
        for s, (col, hatch) in enumerate((("top_k_before_pct", "//"), ("top_k_after_pct", ""))):
            pos = x + (2 * j + s - len(models) + 0.5) * width
            ax.bar(pos, sub[col], width=width, color=f"C{j}", alpha=0.5 if s == 0 else 1.0, hatch=hatch,
                   label=f"{row_label(m)}, {'original query' if s == 0 else 'swapped query'}")
    chance = table.drop_duplicates("type").set_index("type").reindex(types)["chance_pct"]
    ax.scatter(x, chance, marker="_", s=400, color="black", label="chance (share in the gallery)", zorder=3)
    ax.set_xticks(x, types)
    ax.set_ylabel(f"% of top-{k} with the new value")
    ax.set_title("Counterfactual probe: swap one entity value in the query")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def sweep_figure(recall: pd.DataFrame, gain: pd.DataFrame):
    """Left: each row's mean recall against the confounding knob, error bars one std over runs; right:
    EI-CLIP's paired gain over CLIP-FT, error bars one std over pairs (eiclip_core.analysis.sweep_statistics tables).
    No bar where there is one run (no spread)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for j, (row, runs) in enumerate(recall.groupby("row", sort=False)):
        ax1.errorbar(runs["confounding"] + (j - 1) * 0.01, runs["mean_recall"], yerr=runs["std"].fillna(0),
                     marker="o", capsize=3, label=row_label(row))
    ax1.set_xlabel("generator confounding knob (0 = control)")
    ax1.set_ylabel("mean recall (%), full protocol")
    ax1.set_title("Retrieval on generated data (mean ± std over runs)")
    ax1.legend()
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.errorbar(gain["confounding"], gain["gain"], yerr=gain["std"].fillna(0), marker="o", color="black", capsize=3)
    ax2.set_xlabel("generator confounding knob (0 = control)")
    ax2.set_ylabel("EI-CLIP - CLIP-FT (points)")
    ax2.set_title("EI-CLIP's paired gain (mean ± std over pairs)")
    fig.tight_layout()
    return fig
