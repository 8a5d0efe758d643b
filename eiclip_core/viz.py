"""Figures of notebook 05: the confounder made visible (METHOD.md sections 1, 3 to 6).

Each figure comes with the numbers it shows (a table or a dict), so the notebook's readings are
computed from data, never hard-coded. Four layers, each usable alone:

    features     text features, gates and attention of a model on a list of texts; D_t and E_t
    measures     numbers behind the figures: dictionary drift, nearest general-English words, kNN purity
                 of text features, gate and attention summaries, retrieval disagreements
    figures      matplotlib figures from those arrays; `save` writes them as PNG under
                 <reports_dir>/figures/
    sections     one call per figure of notebook 05 on an `Analysis` (the two runs, loaded once):
                 draw, save, and return the numbers with a reading computed from them

UMAP (umap-learn) is imported once per process (its numba compile costs ~15 s on 2 cores the first
time) and always run with a fixed random_state and n_jobs=1, so the same seed draws the same picture.
"""
import textwrap
import warnings
from dataclasses import dataclass
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest

from eiclip_core import layout
from eiclip_core.io import atomic_path

MODEL_NAMES = {"clip-ft": "CLIP-FT", "ei-clip": "EI-CLIP"}
TYPE_COLOURS = dict(zip(("brand", "category", "subcategory", "composition", "season", "fit"),
                        ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))

# General English words, encoded by the frozen text tower, as landmarks of everyday meaning: colours,
# materials, garments, and the plain nouns, moods and positions that fashion entity words collide
# with ("diesel" -> fuel, "goose" -> bird, "top" -> position, "relaxed" -> mood; METHOD.md section 1).
GENERAL_WORDS = (
    "red", "blue", "green", "black", "white", "yellow", "pink", "grey", "brown", "orange", "purple",
    "gold", "silver", "fruit", "flower", "cotton", "wool", "silk", "leather", "fabric", "metal", "wood",
    "stone", "glass", "plastic", "shirt", "dress", "shoe", "hat", "coat", "trousers", "jacket", "bag",
    "fuel", "engine", "car", "truck", "boat", "road", "bird", "animal", "dog", "fish", "tree", "forest",
    "river", "mountain", "ice", "snow", "storm", "weather", "fire", "city", "house", "kitchen", "food",
    "weapon", "tool", "map", "sky", "sea", "beach", "summer", "winter", "position", "mood", "calm",
    "happy", "tired", "straight line", "rule", "normal", "thin", "large", "small", "money", "music",
    "sport", "computer", "person", "child",
)


# ------------------------------------------------------------------------------------------ features


@torch.no_grad()
def encode_texts(encoder, tokenizer, texts, device, batch_size: int = 256) -> np.ndarray:
    """`encoder(tokens) -> (B, d)` over `texts` in batches -> float32 (N, d); no grad, eval mode."""
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(encoder(tokenizer(list(texts[i:i + batch_size])).to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def explain(model, tokenizer, texts, device, batch_size: int = 256) -> tuple:
    """CESM gates (N, |T|) and attention {t: (N, |V_t|)} of an EI-CLIP model, as numpy."""
    gates, attention = [], {}
    for i in range(0, len(texts), batch_size):
        out = model.explain_text(tokenizer(list(texts[i:i + batch_size])).to(device))
        gates.append(out["gates"].float().cpu())
        for t, a in out["attention"].items():
            attention.setdefault(t, []).append(a.float().cpu())
    return torch.cat(gates).numpy(), {t: torch.cat(a).numpy() for t, a in attention.items()}


def dictionaries(model) -> tuple:
    """(D, E): {type: (|V_t|, d)} numpy, D_t frozen and E_t rectified (E = D when the EALM is off)."""
    keys = dict(zip(model.type_keys, model.types))
    d = {keys[k]: _unit(v.detach().float().cpu().numpy()) for k, v in model.dictionaries.items()}
    if model.entity_embeddings is None:
        return d, dict(d)
    e = {keys[k]: _unit(v.detach().float().cpu().numpy()) for k, v in model.entity_embeddings.items()}
    return d, e


def _degrees(u: np.ndarray, v: np.ndarray) -> float:
    """Mean angle in degrees between rows of u and v: 2 asin(|u - v| / 2) of the unit vectors in float64,
    exact for tiny moves (where 1 - cos rounds to 0 and arccos of a float32 cosine is noise)."""
    u, v = (_unit(np.atleast_2d(np.asarray(x, np.float64))) for x in (u, v))
    return float(np.mean(np.degrees(2 * np.arcsin(np.clip(np.linalg.norm(u - v, axis=-1) / 2, 0, 1)))))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------- umap

_UMAP = None


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, metric: str = "cosine") -> np.ndarray:
    """2-D UMAP of the rows of x (float32 (N, 2)); same seed, same coordinates (n_jobs=1)."""
    global _UMAP
    if _UMAP is None:  # the import compiles numba code: once per process
        import umap

        _UMAP = umap.UMAP
    x = np.asarray(x, dtype=np.float32)
    with warnings.catch_warnings():  # tiny inputs make umap warn about its spectral init; harmless
        warnings.simplefilter("ignore")
        reducer = _UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, len(x) - 1)), metric=metric,
                        min_dist=0.1, random_state=seed, n_jobs=1)
        return reducer.fit_transform(x).astype(np.float32)


# ------------------------------------------------------------------------------------------ measures


def nearest_words(vectors: np.ndarray, word_emb: np.ndarray, words, k: int = 3) -> list:
    """For each row of `vectors`, the k general words of highest cosine: [[(word, cos), ...], ...]."""
    sims = _unit(vectors) @ _unit(word_emb).T  # (N, W)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return [[(words[j], float(sims[i, j])) for j in row] for i, row in enumerate(top)]


def highlight_values(values: dict, prone: dict, counts: dict, types, n: int = 6) -> list:
    """(type, index) of n confounding-prone values, the most frequent of each type in turn (so brands,
    fits, ... all appear); any values when none is prone. The "other" entry is never chosen."""
    def ranked(t, want_prone):
        idx = [i for i in range(len(values[t]) - 1) if not want_prone or prone[t][i]]
        return sorted(idx, key=lambda i: (-int(counts[t][i]), i))

    want_prone = any(prone[t][:-1].any() for t in types)
    per_type = [[(t, i) for i in ranked(t, want_prone)] for t in types]
    interleaved = [pair for group in zip(*[g + [None] * (n - len(g)) for g in per_type]) for pair in group if pair]
    return interleaved[:n]


def neighbour_table(d: dict, e: dict, values: dict, chosen: list, words, word_emb, k: int = 3) -> pd.DataFrame:
    """Nearest general words of chosen (type, index) values in D_t (before) and E_t (after)."""
    rows = []
    for t, i in chosen:
        before = nearest_words(d[t][i:i + 1], word_emb, words, k)[0]
        after = nearest_words(e[t][i:i + 1], word_emb, words, k)[0]
        rows.append({"type": t, "value": values[t][i],
                     "before (D_t)": ", ".join(w for w, _ in before), "cos before": before[0][1],
                     "after (E_t)": ", ".join(w for w, _ in after), "cos after": after[0][1],
                     "moved (degrees)": _degrees(d[t][i], e[t][i])})
    return pd.DataFrame(rows)


def dictionary_shift(d: dict, e: dict, prone: dict, words_emb: np.ndarray) -> pd.DataFrame:
    """Per group (prone / not prone): how far E_t moved from D_t (mean angle) and how close each value
    stays to its nearest general English word before and after (mean max cosine)."""
    rows = []
    for label, want in (("prone", True), ("not prone", False)):
        idx = [(t, i) for t in d for i in range(len(d[t]) - 1) if bool(prone[t][i]) == want]
        if not idx:
            continue
        dv = np.stack([d[t][i] for t, i in idx])
        ev = np.stack([e[t][i] for t, i in idx])
        w = _unit(words_emb)
        rows.append({"values": label, "n": len(idx), "moved (degrees)": _degrees(dv, ev),
                     "nearest word cos before": float((dv @ w.T).max(1).mean()),
                     "nearest word cos after": float((ev @ w.T).max(1).mean())})
    return pd.DataFrame(rows).set_index("values")


def knn_purity(features: np.ndarray, labels, k: int = 10) -> float:
    """Mean share of each labelled point's k nearest neighbours (cosine) that carry its label.

    Points whose label is missing (None / "") are neither queries nor neighbours."""
    labels = np.asarray(labels, dtype=object)
    keep = np.flatnonzero([lab not in (None, "") for lab in labels])
    if len(keep) < 2:
        return float("nan")
    f = _unit(np.asarray(features, dtype=np.float32)[keep])
    lab = labels[keep]
    k = min(k, len(keep) - 1)
    sims = f @ f.T
    np.fill_diagonal(sims, -np.inf)
    nn = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float(np.mean(lab[nn] == lab[:, None]))


def purity_table(features: dict, labels: dict, k: int = 10) -> pd.DataFrame:
    """kNN purity (see knn_purity) of each model's features (columns) for each labelling (rows)."""
    return pd.DataFrame({m: {t: knn_purity(f, lab, k) for t, lab in labels.items()} for m, f in features.items()})


def gate_table(gates: np.ndarray, types) -> pd.DataFrame:
    """Mean, spread and quartiles of g_t per type, highest mean first."""
    g = pd.DataFrame(gates, columns=list(types))
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "q25": g.quantile(0.25), "q75": g.quantile(0.75)})
    return out.sort_values("mean", ascending=False, kind="stable")


def gate_by_group(gates: np.ndarray, types, groups, top: int = 12) -> pd.DataFrame:
    """Mean g_t per group (e.g. category) for the `top` largest groups: rows groups, columns types."""
    g = pd.DataFrame(gates, columns=list(types))
    g["group"] = list(groups)
    largest = g["group"].value_counts(sort=True).index[:top]
    return g[g["group"].isin(largest)].groupby("group", sort=True).mean()


def attention_table(attention: dict, value_ids: dict, prior: dict) -> pd.DataFrame:
    """Per type, over queries whose value is known: how often the attention's top value is the query's
    own value, against the prior's top value (what attention would pick if it ignored the query), and
    the mean attention weight on the own value against its prior weight."""
    rows = {}
    for t, a in attention.items():
        ids = np.asarray(value_ids[t])
        known = ids >= 0
        if not known.any():
            continue
        a, ids = a[known], ids[known]
        rows[t] = {"queries": int(known.sum()),
                   "top-1 is own value": float(np.mean(a.argmax(1) == ids)),
                   "prior top-1 is own value": float(np.mean(np.argmax(prior[t]) == ids)),
                   "weight on own value": float(np.mean(a[np.arange(len(ids)), ids])),
                   "prior weight on own value": float(np.mean(np.asarray(prior[t])[ids]))}
    return pd.DataFrame(rows).T.astype({"queries": int})


def retrieval_examples(ranks: dict, first: str, second: str, n: int = 2, seed: int = 0) -> dict:
    """Queries (text -> image) ranked top-1 by one model and not by the other, both ways.

    ranks[name] (N,): rank of the positive (0 = top-1). Returns {"counts": {...}, "<a> right, <b> wrong":
    indices}: n of each, drawn with `seed` so the examples do not always come from the file's start."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(ranks[first]), np.asarray(ranks[second])
    out = {"counts": {}}
    for right, wrong, ra, rb in ((second, first, b, a), (first, second, a, b)):
        key = f"{right} right, {wrong} wrong"
        idx = np.flatnonzero((ra == 0) & (rb > 0))
        out["counts"][key] = int(len(idx))
        out[key] = np.sort(rng.permutation(idx)[:n]).tolist()
    return out


def top_k(query: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest-scoring candidates per query (ties: lower index first) -> (Q, k)."""
    scores = np.asarray(query, np.float32) @ np.asarray(candidates, np.float32).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


# ------------------------------------------------------------------------------------------- figures


def save(fig, reports_dir, name: str):
    """Write `fig` as <reports_dir>/figures/<name>.png (atomically) and return that path."""
    path = layout.figures_dir(reports_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None})
    return path


def dictionary_figure(d: dict, e: dict, values: dict, prone: dict, chosen: list, words, word_emb,
                      seed: int = 0):
    """UMAP of D_t (left) and E_t (right) in one shared 2-D map, with the general words in grey.

    One UMAP of the union keeps the panels comparable: a value's move from left to right is the EALM's
    rectification. Points are coloured by type; confounding-prone values are drawn as crosses and the
    chosen values are labelled in both panels."""
    types = list(d)
    sizes = [len(d[t]) for t in types]
    xy = umap_2d(np.concatenate([np.concatenate([d[t] for t in types]), np.concatenate([e[t] for t in types]),
                                 _unit(word_emb)]), seed=seed)
    n = sum(sizes)
    parts = {"D": xy[:n], "E": xy[n:2 * n]}
    wxy = xy[2 * n:]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6), sharex=True, sharey=True)
    for ax, (key, title) in zip(axes, (("D", "D_t: entity values, frozen text tower (before)"),
                                       ("E", "E_t: rectified by the EALM (after)"))):
        ax.scatter(wxy[:, 0], wxy[:, 1], s=10, c="lightgrey", label="general English words")
        for j in range(0, len(words), 4):  # a quarter of the words named: enough to read the map
            ax.annotate(words[j], wxy[j], fontsize=7, color="grey")
        start = 0
        for t, size in zip(types, sizes):
            pts = parts[key][start:start + size]
            flags = np.asarray(prone[t], bool)
            colour = TYPE_COLOURS.get(t, "black")
            ax.scatter(pts[~flags, 0], pts[~flags, 1], s=18, c=colour, alpha=0.8, label=t)
            ax.scatter(pts[flags, 0], pts[flags, 1], s=40, c=colour, marker="X", edgecolors="black",
                       linewidths=0.6)
            for ct, ci in chosen:
                if ct == t:
                    ax.annotate(values[t][ci], pts[ci], fontsize=9, weight="bold", xytext=(4, 4),
                                textcoords="offset points")
            start += size
        ax.scatter([], [], s=40, c="white", marker="X", edgecolors="black", label="confounding-prone")
        ax.set_title(title)
        ax.set_xlabel("UMAP 1")
    axes[0].set_ylabel("UMAP 2")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, title="entity type")
    fig.suptitle("Entity dictionaries before and after the EALM, among general English words")
    fig.tight_layout()
    return fig


def text_umap_figure(features: dict, labels: dict, seed: int = 0, top: int = 8):
    """Rows = models, columns = entity types: UMAP of validation text features coloured by the value of
    the type (the `top` most frequent values; the rest and missing in grey). One UMAP per model."""
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
                ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(j % 10), label=str(v)[:18])
            ax.set_title(f"{m}: coloured by {t}")
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
    ax2.set_yticks(range(by_group.shape[0]), [str(g)[:24] for g in by_group.index])
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
        names = [ex["values"][i] + (" (own)" if i == ex["own"] else "") for i in order]
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel("weight")
        own = ex["values"][ex["own"]] if ex["own"] >= 0 else "unknown"
        ax.set_title(f"own {ex['type']}: {own}\n" + textwrap.fill(ex["text"][:120], 44), fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Where the intervention looks: attention over a dictionary for example queries")
    fig.tight_layout()
    return fig


def probe_figure(table: pd.DataFrame):
    """Bars: % of top-10 with the new value before and after the swap, per type and model (probe.run_probe)."""
    types = list(dict.fromkeys(table["type"]))
    models = list(dict.fromkeys(table["model"]))
    fig, ax = plt.subplots(figsize=(2.6 * len(types) + 2, 4))
    width = 0.8 / (2 * len(models))
    x = np.arange(len(types))
    for j, m in enumerate(models):
        sub = table[table["model"] == m].set_index("type").reindex(types)
        for s, (col, hatch) in enumerate((("top-10 before %", "//"), ("top-10 after %", ""))):
            pos = x + (2 * j + s - len(models) + 0.5) * width
            ax.bar(pos, sub[col], width=width, color=f"C{j}", alpha=0.5 if s == 0 else 1.0, hatch=hatch,
                   label=f"{m}, {'original query' if s == 0 else 'swapped query'}")
    chance = table.drop_duplicates("type").set_index("type").reindex(types)["chance %"]
    ax.scatter(x, chance, marker="_", s=400, color="black", label="chance (share in the gallery)", zorder=3)
    ax.set_xticks(x, types)
    ax.set_ylabel("% of top-10 with the new value")
    ax.set_title("Counterfactual probe: swap one entity value in the query")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def retrieval_examples_figure(cases: list, image_of, k: int = 5):
    """Rows: (query, model) pairs; columns: the model's top-k images, the positive framed in green.

    cases: dicts with keys title, text, model, top (k product indices), positive (product index);
    image_of(product index) -> uint8 (H, W, 3)."""
    fig, axes = plt.subplots(len(cases), k, figsize=(1.7 * k + 3.5, 1.9 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        for c in range(k):
            ax = axes[r, c]
            p = case["top"][c]
            ax.imshow(image_of(p))
            ax.set_xticks([])
            ax.set_yticks([])
            hit = p == case["positive"]
            for side in ax.spines.values():
                side.set_edgecolor("limegreen" if hit else "lightgrey")
                side.set_linewidth(4 if hit else 1)
        axes[r, 0].set_ylabel(case["model"], fontsize=9)
        text = textwrap.fill(case["text"][:110], 34)
        axes[r, k - 1].annotate(f"{case['title']}\n{text}", (1.08, 0.5), xycoords="axes fraction",
                                fontsize=7, va="center")
    fig.suptitle(f"Text -> image retrieval: top {k} (green frame = the query's product)")
    fig.tight_layout()
    return fig


def sweep_figure(table: pd.DataFrame):
    """Left: mean recall of both rows against the confounding knob; right: EI-CLIP's gain."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for col in [c for c in table.columns if c.startswith("mean R ")]:
        ax1.plot(table["confounding"], table[col], marker="o", label=col[len("mean R "):])
    ax1.set_xlabel("generator confounding knob")
    ax1.set_ylabel("mean recall (%), full protocol")
    ax1.set_title("Retrieval on generated data")
    ax1.legend()
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.plot(table["confounding"], table["gain"], marker="o", color="black")
    ax2.set_xlabel("generator confounding knob")
    ax2.set_ylabel("EI-CLIP - CLIP-FT (points)")
    ax2.set_title("EI-CLIP gain against confounding")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------- notebook 05 sections
# Each section loads what it needs from an Analysis, draws and saves its figure, and returns the numbers
# with a reading computed from them, so the notebook stays a list of calls.

ROWS = ("clip-ft", "ei-clip")


@dataclass
class Analysis:
    """What notebook 05 looks at, loaded once: both runs, the frozen text tower, the validation split."""

    data: object  # eiclip_core.data.FashionGen of the validation split
    artifact: object  # eiclip_core.entities.EntityArtifact
    models: dict  # "CLIP-FT" / "EI-CLIP" -> EICLIP in eval mode
    tokenizer: Callable
    frozen: Callable  # tokens -> (B, d) L2-normalised text features before fine-tuning (f_T^0)
    embeddings: dict  # name -> eiclip_core.evaluate.Embeddings of the validation split (cached)
    device: torch.device

    @property
    def texts(self) -> list:
        return self.data.products["text"].tolist()

    def labels(self, entity_type: str) -> list:
        """Validation products' values of a type; None when missing or in the "other" bucket."""
        values = self.artifact.values[entity_type]
        ids = self.artifact.value_ids("validation")[entity_type]
        return [values[i] if i >= 0 and values[i] != "other" else None for i in ids]

    def gallery(self, name: str) -> np.ndarray:
        """First-view image embeddings (N_products, d) of a model: the full protocol's gallery."""
        emb = self.embeddings[name]
        return emb.image[emb.first_view]

    def encoder(self, name: str) -> Callable:
        model = self.models[name]
        return lambda texts: encode_texts(model.encode_text, self.tokenizer, texts, self.device)


def load_analysis(data_dir, seed: int, device) -> Analysis:
    """Load the CLIP-FT and EI-CLIP runs of `seed` (notebook 03) and their cached validation embeddings
    (the cache notebook 04 fills; computed here when missing)."""
    from eiclip_core.backbone import load_backbone
    from eiclip_core.checkpoint import checkpoint_id
    from eiclip_core.data import FashionGen
    from eiclip_core.entities import load_artifact
    from eiclip_core.errors import KitError
    from eiclip_core.evaluate import cached_embeddings
    from eiclip_core.loading import load_run

    validation = layout.split_file(data_dir, "validation")
    models, embeddings = {}, {}
    for row in ROWS:
        run = layout.run_dir(data_dir, row, seed)
        if not (run / "final.pt").is_file():
            raise KitError(f"{run}: run not finished (no final.pt); train it with notebook 03")
        model, backbone, cfg = load_run(run, device)
        models[MODEL_NAMES[row]] = model
        embeddings[MODEL_NAMES[row]] = cached_embeddings(
            lambda m=model, b=backbone: (m, b), {"checkpoint": checkpoint_id(run / "final.pt")}, validation,
            layout.cache_dir(data_dir), device)
    # the text tower as loaded before fine-tuning (same seed = same projection as the run's D_t)
    frozen = load_backbone(cfg.backbone, cfg.pretrained, device=device, seed=cfg.seed).model.eval()
    return Analysis(data=FashionGen(validation), artifact=load_artifact(layout.entities_file(data_dir)),
                    models=models, tokenizer=backbone.tokenizer,
                    frozen=lambda tokens: torch.nn.functional.normalize(frozen.encode_text(tokens), dim=-1),
                    embeddings=embeddings, device=device)


def section_dictionaries(an: Analysis, reports_dir, seed: int = 0, n_values: int = 6) -> dict:
    """UMAP of D_t next to E_t among general English words; neighbours of prone values before/after."""
    from eiclip_core.model import prompt_texts

    model = an.models["EI-CLIP"]
    d, e = dictionaries(model)
    art = an.artifact
    words = list(GENERAL_WORDS)
    word_emb = encode_texts(an.frozen, an.tokenizer, words, an.device)
    # the frozen tower must reproduce D_t, else the general words live in another space
    same = np.mean([np.mean(np.sum(d[t] * encode_texts(an.frozen, an.tokenizer, prompt_texts(
        t, art.values[t], model.cfg.prompt), an.device), axis=1)) for t in model.types])
    prone = {t: art.prone[t] for t in model.types}
    chosen = highlight_values(art.values, prone, art.counts, model.types, n_values)
    neighbours = neighbour_table(d, e, art.values, chosen, words, word_emb)
    shift = dictionary_shift(d, e, prone, word_emb)
    fig = dictionary_figure(d, e, art.values, prone, chosen, words, word_emb, seed)
    return {"figure": save(fig, reports_dir, "05_dictionaries"), "neighbours": neighbours, "shift": shift,
            "reading": _read_dictionaries(shift, neighbours, same)}


def _more(a: float, b: float, words=("more", "less", "as"), nd: int = 3, tol: float = 0.0) -> str:
    """Compare two numbers as they are printed (rounded to nd decimals), so a reading never contradicts
    them; a difference of at most `tol` reads as the third word (no claim from noise)."""
    a, b = round(float(a), nd), round(float(b), nd)
    if abs(a - b) <= tol:
        return words[2]
    return words[0] if a > b else words[1]


def _read_dictionaries(shift: pd.DataFrame, neighbours: pd.DataFrame, same: float) -> str:
    lines = [f"check: the frozen text tower reproduces D_t (mean cosine {same:.3f})."]
    if "prone" in shift.index:
        p = shift.loc["prone"]
        lines.append(f"prone values: E_t turned {p['moved (degrees)']:.2f} degrees away from D_t; their nearest general English "
                     f"word has cosine {p['nearest word cos before']:.3f} before and {p['nearest word cos after']:.3f} "
                     f"after ({_more(p['nearest word cos after'], p['nearest word cos before'], ('closer to', 'further from', 'as close to'))}"
                     " everyday meaning).")
    if {"prone", "not prone"} <= set(shift.index):
        a, b = shift.loc["prone", "moved (degrees)"], shift.loc["not prone", "moved (degrees)"]
        lines.append(f"the EALM moved prone values {_more(a, b, ('more than', 'less than', 'as much as'), nd=2)} "
                     f"the others ({a:.2f} vs {b:.2f} degrees).")
    changed = int((neighbours["before (D_t)"].str.split(", ").str[0] != neighbours["after (E_t)"].str.split(", ").str[0]).sum())
    lines.append(f"nearest general word changed for {changed} of the {len(neighbours)} values in the table.")
    return "\n".join(lines)


def section_text_features(an: Analysis, reports_dir, seed: int = 0, types=("brand", "category", "fit"),
                          max_points: int = 5000) -> dict:
    """UMAP of validation text features of both models coloured by entity types, with kNN purity.

    At most `max_points` products (a seeded sample; all of a generated split), so the real 32k-product
    validation split neither fills memory with an N x N similarity matrix nor makes UMAP slow."""
    types = [t for t in types if t in an.artifact.all_types]
    n = len(an.texts)
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_points]) if n > max_points else np.arange(n)
    features = {name: emb.text[keep] for name, emb in an.embeddings.items()}
    labels = {t: np.asarray(an.labels(t), dtype=object)[keep] for t in types}
    purity = purity_table(features, labels)
    fig = text_umap_figure(features, labels, seed)
    lines = [f"{t}: 10-NN purity {purity.loc[t, 'CLIP-FT']:.3f} (CLIP-FT) vs {purity.loc[t, 'EI-CLIP']:.3f} (EI-CLIP): "
             f"EI-CLIP groups texts of the same {t} "
             f"{_more(purity.loc[t, 'EI-CLIP'], purity.loc[t, 'CLIP-FT'], ('more', 'less', 'about as'), tol=0.01)} "
             "tightly (differences of 0.01 or less read as equal)."
             for t in types]
    return {"figure": save(fig, reports_dir, "05_text_features"), "purity": purity, "reading": "\n".join(lines)}


def section_gates(an: Analysis, reports_dir) -> dict:
    """The CESM gates g_t of EI-CLIP on every validation text: per type and per category."""
    model = an.models["EI-CLIP"]
    gates, attention = explain(model, an.tokenizer, an.texts, an.device)
    table = gate_table(gates, model.types)
    by_category = gate_by_group(gates, model.types, an.data.products["category"])
    fig = gate_figure(gates, model.types, by_category)
    above = [t for t in table.index if round(table.loc[t, "mean"], 3) > 0.5]
    spread = (by_category.max() - by_category.min()).sort_values(ascending=False, kind="stable")
    reading = (f"highest mean gate: {table.index[0]} ({table['mean'].iloc[0]:.3f}); lowest: {table.index[-1]} "
               f"({table['mean'].iloc[-1]:.3f}). Types gated above 0.5 on average (treated as confounders): "
               f"{', '.join(above) if above else 'none'}. Across categories the mean gate varies most for "
               f"{spread.index[0]} (range {spread.iloc[0]:.3f}).")
    return {"figure": save(fig, reports_dir, "05_gates"), "table": table, "by_category": by_category,
            "attention": attention, "reading": reading}


def section_attention(an: Analysis, reports_dir, attention: dict, entity_type: str = "brand", n: int = 3,
                      seed: int = 0) -> dict:
    """Attention over one dictionary for n example queries (seeded, prone values first), and how often
    the attention's top value is the query's own value for every type."""
    art = an.artifact
    ids = art.value_ids("validation")
    table = attention_table(attention, ids, art.prior)
    own = ids[entity_type]
    known = np.flatnonzero(own >= 0)
    prone = known[art.prone[entity_type][own[known]]]
    pool = prone if len(prone) >= n else known
    picks = np.sort(np.random.default_rng(seed).permutation(pool)[:n])
    examples = [{"text": an.texts[q], "type": entity_type, "values": art.values[entity_type],
                 "attention": attention[entity_type][q], "prior": art.prior[entity_type], "own": int(own[q])}
                for q in picks]
    fig = attention_figure(examples)
    lines = [f"{t}: the attention's top value is the query's own value for {100 * r['top-1 is own value']:.1f} % of "
             f"{int(r['queries'])} queries (prior alone: {100 * r['prior top-1 is own value']:.1f} %); mean weight on "
             f"the own value {r['weight on own value']:.3f} vs prior {r['prior weight on own value']:.3f}."
             for t, r in table.iterrows()]
    return {"figure": save(fig, reports_dir, "05_attention"), "table": table, "reading": "\n".join(lines)}


def section_probe(an: Analysis, reports_dir, n_queries: int = 200, seed: int = 0) -> dict:
    """The counterfactual probe (eiclip_core.probe) for CLIP-FT and EI-CLIP on the same swaps."""
    from eiclip_core import probe

    art = an.artifact
    models = {name: (an.encoder(name), an.gallery(name), an.embeddings[name].text) for name in an.models}
    summary, details = probe.run_probe(models, an.texts, art.mentions("validation"), art.value_ids("validation"),
                                       art.values, probe.PROBE_TYPES, n_queries=n_queries, seed=seed)
    examples = pd.concat([df.head(2).assign(type=t) for (t, name), df in details.items() if name == "EI-CLIP"])
    fig = probe_figure(summary)
    return {"figure": save(fig, reports_dir, "05_probe"), "table": summary,
            "examples": examples[["type", "text", "swapped"]].reset_index(drop=True),
            "reading": probe.describe(summary, "CLIP-FT", "EI-CLIP")}


def section_examples(an: Analysis, reports_dir, n: int = 2, k: int = 5, seed: int = 0) -> dict:
    """Text -> image queries CLIP-FT gets wrong and EI-CLIP right (top-1), and the reverse."""
    from eiclip_core.metrics import positive_ranks

    pids = an.data.products["product_id"].to_numpy()
    ranks = {name: positive_ranks(an.embeddings[name].text, an.gallery(name), pids, pids) for name in an.models}
    found = retrieval_examples(ranks, "CLIP-FT", "EI-CLIP", n=n, seed=seed)
    cases = [{"title": key, "text": an.texts[q], "model": name, "positive": q,
              "top": top_k(an.embeddings[name].text[q:q + 1], an.gallery(name), k)[0].tolist()}
             for key in list(found)[1:] for q in found[key] for name in an.models]
    image_of = lambda p: an.data.image(int(an.data.first_row[p]))  # noqa: E731
    path = save(retrieval_examples_figure(cases, image_of, k), reports_dir, "05_examples") if cases else None
    a, b = (int(v) for v in found["counts"].values())
    p = binomtest(a, a + b).pvalue if a + b else 1.0  # sign test: are the disagreements one-sided?
    verdict = ("neither model wins more of them beyond chance" if p >= 0.05 else
               f"{'EI-CLIP' if a > b else 'CLIP-FT'} wins more of them")
    reading = (f"of {len(pids)} text queries, EI-CLIP ranks the right image first where CLIP-FT does not for {a}, "
               f"and CLIP-FT where EI-CLIP does not for {b}: {verdict} (sign test p = {p:.2f}).")
    return {"figure": path, "counts": found["counts"], "reading": reading}


def section_sweep(profile, data_dir, reports_dir, seed: int = 0, device="cpu") -> dict:
    """EI-CLIP's gain over CLIP-FT against the generator's confounding knob (eiclip_core.sweep)."""
    from eiclip_core import sweep

    if profile.real_data or not profile.confounding_sweep:
        return {"figure": None, "table": None, "reading": f"profile {profile.name}: no confounding sweep "
                "(the real data has no knob)."}
    table = sweep.run_sweep(profile, data_dir, seed, device)
    return {"figure": save(sweep_figure(table), reports_dir, "05_sweep"), "table": table,
            "reading": sweep.describe(table)}
