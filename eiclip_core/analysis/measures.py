"""Measures of notebook 05: the numbers behind its figures and readings (METHOD.md sections 1, 3 to 6).

    features    text features, CESM gates and attention of a model on a list of texts; D_t and E_t
    measures    dictionary drift (how far E_t turned from D_t), nearest general-English words, kNN
                purity of text features, gate and attention summaries, retrieval disagreements

Everything here takes arrays or models and returns arrays, records or tables whose columns are field
names; eiclip_core.figures draws them, eiclip_core.analysis.readings turns them into sentences and
eiclip_core.analysis.sections.shown labels the tables notebook 05 shows.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

# General English words, encoded by the frozen text tower, as landmarks of everyday meaning, grouped by
# meaning: the colours, materials and garments the general corpus grounds in pixels, and the plain nouns,
# moods and positions that fashion entity words collide with ("diesel" -> fuel, "goose" -> bird, "top" ->
# position, "relaxed" -> mood; METHOD.md section 1). A word the general corpus (eiclip_core.synth.general_corpus)
# draws sits in the corpus's group (tests/test_analysis.py checks); the others by their ordinary sense.
GENERAL_WORD_GROUPS = {
    "colour words": ("red", "blue", "green", "black", "white", "yellow", "pink", "grey", "brown", "orange",
                     "purple", "gold", "silver"),
    "material words": ("cotton", "wool", "silk", "leather", "fabric", "metal", "wood", "stone", "glass", "plastic"),
    "garment words": ("shirt", "dress", "shoe", "hat", "coat", "trousers", "jacket", "bag"),
    "object words": ("fruit", "flower", "fuel", "engine", "car", "truck", "boat", "road", "bird", "animal", "dog",
                     "fish", "tree", "forest", "river", "mountain", "ice", "snow", "storm", "weather", "fire",
                     "city", "house", "kitchen", "food", "weapon", "tool", "map", "sky", "sea", "beach", "money",
                     "music", "sport", "computer", "person", "child"),
    "position, mood and other words": ("summer", "winter", "position", "mood", "calm", "happy", "tired",
                                       "straight line", "rule", "normal", "thin", "large", "small"),
}
GENERAL_WORDS = tuple(word for words in GENERAL_WORD_GROUPS.values() for word in words)
WORD_GROUP = {word: group for group, words in GENERAL_WORD_GROUPS.items() for word in words}
# the general-word group each kind of the generator's ordinary-word values collides with (collision_kinds)
COLLIDES_WITH = {"colour-word brands": "colour words", "material-word brands": "material words",
                 "garment-word brands": "garment words", "plain-noun brands": "object words",
                 "category words": "object words", "subcategory words": "object words",
                 "fit words": "position, mood and other words"}
GROUPS = (("prone", True), ("not prone", False))  # confounding-prone values against the others


# ------------------------------------------------------------------------------------------ features


def encode_texts(encoder, tokenizer, texts, device, batch_size: int = 256) -> np.ndarray:
    """`encoder(tokens) -> (B, d)` over `texts` in batches -> float32 (N, d): evaluation's text loop."""
    from eiclip_core.evaluation.embeddings import encode_texts as encode

    return encode(encoder, tokenizer, texts, device, batch_size)


@torch.no_grad()
def gates_and_attention(model, tokenizer, texts, device, batch_size: int = 256) -> tuple:
    """CESM gates (N, |T|) and attention {t: (N, |V_t|)} of an EI-CLIP model on `texts`, as numpy."""
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
    d = {keys[k]: unit_rows(v.detach().float().cpu().numpy()) for k, v in model.dictionaries.items()}
    if model.entity_embeddings is None:
        return d, dict(d)
    e = {keys[k]: unit_rows(v.detach().float().cpu().numpy()) for k, v in model.entity_embeddings.items()}
    return d, e


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of x scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def angles_degrees(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle in degrees between each row of u and v: 2 asin(|u - v| / 2) of the unit vectors in float64,
    exact for tiny moves (where 1 - cos rounds to 0 and arccos of a float32 cosine is noise)."""
    u, v = (unit_rows(np.atleast_2d(np.asarray(x, np.float64))) for x in (u, v))
    return np.degrees(2 * np.arcsin(np.clip(np.linalg.norm(u - v, axis=-1) / 2, 0, 1)))


# ------------------------------------------------------------------------------------------ measures


def _nearest(vectors: np.ndarray, word_emb: np.ndarray, k: int) -> tuple:
    """(cosines (N, W), indices (N, k) of the k words of highest cosine, nearest first) of each row."""
    sims = unit_rows(np.atleast_2d(vectors)) @ unit_rows(word_emb).T
    return sims, np.argsort(-sims, axis=1, kind="stable")[:, :k]


def nearest_words(vectors: np.ndarray, word_emb: np.ndarray, words, k: int = 3) -> list:
    """For each row of `vectors`, the k general words of highest cosine: [[(word, cos), ...], ...]."""
    sims, top = _nearest(vectors, word_emb, k)
    return [[(words[j], float(sims[i, j])) for j in row] for i, row in enumerate(top)]


def nearest_groups(vectors: np.ndarray, word_emb: np.ndarray, word_groups, k: int = 5) -> list:
    """For each row of `vectors`, the group most of its k nearest general words (cosine, in the encoder's
    space, not a 2-D map) belong to; `word_groups[j]` is the group of word j. A tie goes to the tied group
    with the nearer word, so k = 1 is the group of the nearest word."""
    out = []
    for row in _nearest(vectors, word_emb, k)[1]:
        groups = [word_groups[j] for j in row]
        most = max(groups.count(g) for g in groups)
        out.append(next(g for g in groups if groups.count(g) == most))
    return out


def collision_kinds() -> dict:
    """{kind: (entity type, normalised values)}: the generator's ordinary-word values (eiclip_core.synth.world)
    by what their everyday meaning collides with; the kinds of COLLIDES_WITH."""
    from eiclip_core.synth import world
    from eiclip_core.data.product_text import normalise_value

    lists = {**{f"{kind} brands": ("brand", words) for kind, words in world.BRAND_ORDINARY_KINDS.items()},
             "category words": ("category", [c.ordinary for c in world.CATALOGUE]),
             "subcategory words": ("subcategory", [s.ordinary for s in world.SUBCATEGORIES]),
             "fit words": ("fit", world.FIT_ORDINARY)}
    return {kind: (t, {normalise_value(w) for w in words}) for kind, (t, words) in lists.items()}


def collision_values(values: dict, types) -> dict:
    """{kind: [index, ...]}: the values of each of `types` that are of a collision kind (collision_kinds),
    kinds with none left out; never "other" (the last value)."""
    found = {kind: [i for i, v in enumerate(values[t][:-1]) if v in words]
             for kind, (t, words) in collision_kinds().items() if t in types}
    return {kind: idx for kind, idx in found.items() if idx}


def collision_picks(values: dict, counts: dict, types) -> list:
    """(kind, type, index) of the most frequent value of each collision kind present (collision_values),
    the values notebook 05 names in its dictionary map."""
    kinds = collision_kinds()
    return [(kind, kinds[kind][0], min(idx, key=lambda i: (-int(counts[kinds[kind][0]][i]), i)))
            for kind, idx in collision_values(values, types).items()]


def collision_table(d: dict, e: dict, values: dict, word_emb: np.ndarray, words, k: int = 5) -> pd.DataFrame:
    """Per collision kind present: how many of its values have the group it collides with (COLLIDES_WITH)
    as their nearest general-word group (nearest_groups, WORD_GROUP) in D_t (before) and E_t (after)."""
    groups, kinds, rows = [WORD_GROUP[w] for w in words], collision_kinds(), []
    for kind, idx in collision_values(values, list(d)).items():
        t, target = kinds[kind][0], COLLIDES_WITH[kind]
        before, after = (nearest_groups(x[t][idx], word_emb, groups, k) for x in (d, e))
        rows.append({"kind": kind, "collides_with": target, "values": len(idx), "k": k,
                     "group_words": groups.count(target), "words": len(words),
                     "nearest_before": before.count(target), "nearest_after": after.count(target)})
    columns = ["kind", "collides_with", "values", "k", "group_words", "words", "nearest_before", "nearest_after"]
    return pd.DataFrame(rows, columns=columns)


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


def neighbour_table(d: dict, e: dict, values: dict, chosen: list, words, word_emb, k: int = 3,
                    k_group: int = 5) -> pd.DataFrame:
    """Nearest general words of chosen (kind, type, index) values in D_t (before) and E_t (after), with the
    group the kind collides with ("" for kind "") and the value's nearest general-word group (nearest_groups
    over the k_group nearest words) before and after."""
    rows, groups = [], [WORD_GROUP[w] for w in words]
    for kind, t, i in chosen:
        before = nearest_words(d[t][i:i + 1], word_emb, words, k)[0]
        after = nearest_words(e[t][i:i + 1], word_emb, words, k)[0]
        rows.append({"kind": kind, "type": t, "value": values[t][i],
                     "nearest_words_before": ", ".join(w for w, _ in before), "cos_before": before[0][1],
                     "nearest_words_after": ", ".join(w for w, _ in after), "cos_after": after[0][1],
                     "moved_degrees": float(angles_degrees(d[t][i], e[t][i])[0]),
                     "collides_with": COLLIDES_WITH.get(kind, ""),
                     "group_before": nearest_groups(d[t][i], word_emb, groups, k_group)[0],
                     "group_after": nearest_groups(e[t][i], word_emb, groups, k_group)[0]})
    return pd.DataFrame(rows)


def _group_rows(d: dict, prone: dict, want: bool) -> list:
    """(type, index) of the values (never "other", the last row) whose prone flag is `want`."""
    return [(t, i) for t in d for i in range(len(d[t]) - 1) if bool(prone[t][i]) == want]


def moved_degrees(d: dict, e: dict, prone: dict) -> dict:
    """{"prone": angles, "not prone": angles}: how far each value's E_t turned from its D_t, in degrees."""
    out = {}
    for label, want in GROUPS:
        idx = _group_rows(d, prone, want)
        if idx:
            out[label] = angles_degrees(np.stack([d[t][i] for t, i in idx]), np.stack([e[t][i] for t, i in idx]))
    return out


def dictionary_shift(d: dict, e: dict, prone: dict, words_emb: np.ndarray) -> pd.DataFrame:
    """Per group (prone / not prone): how far E_t moved from D_t (mean angle) and how close each value
    stays to its nearest general English word before and after (mean max cosine)."""
    rows, moved = [], moved_degrees(d, e, prone)
    w = unit_rows(words_emb)
    for label, want in GROUPS:
        idx = _group_rows(d, prone, want)
        if not idx:
            continue
        dv = np.stack([d[t][i] for t, i in idx])
        ev = np.stack([e[t][i] for t, i in idx])
        rows.append({"values": label, "n": len(idx), "moved_degrees": float(np.mean(moved[label])),
                     "nearest_word_cos_before": float((dv @ w.T).max(1).mean()),
                     "nearest_word_cos_after": float((ev @ w.T).max(1).mean())})
    return pd.DataFrame(rows).set_index("values")


def moved_rank_test(moved: dict) -> "float | None":
    """Two-sided Mann-Whitney p-value: do prone values turn further (or less far) than the others?
    None when a group is empty; 1.0 when every angle is the same (no difference to test)."""
    from scipy.stats import mannwhitneyu  # here, not at the top: a slow import most importers never use

    if len(moved) < 2:
        return None
    p = float(mannwhitneyu(moved["prone"], moved["not prone"], alternative="two-sided").pvalue)
    return 1.0 if np.isnan(p) else p


def knn_purity(features: np.ndarray, labels, k: int = 10) -> float:
    """Mean share of each labelled point's k nearest neighbours (cosine) that carry its label.

    Points whose label is missing (None / "") are neither queries nor neighbours."""
    labels = np.asarray(labels, dtype=object)
    keep = np.flatnonzero([lab not in (None, "") for lab in labels])
    if len(keep) < 2:
        return float("nan")
    f = unit_rows(np.asarray(features, dtype=np.float32)[keep])
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
    own value, against the prior's top value (what attention would pick if it ignored the query), the
    mean attention weight on the own value against its prior weight, and how far the attention departs
    from the prior (mean total variation distance: 0 = the prior itself, 1 = disjoint)."""
    rows = {}
    for t, a in attention.items():
        ids = np.asarray(value_ids[t])
        known = ids >= 0
        if not known.any():
            continue
        a, ids, p = a[known], ids[known], np.asarray(prior[t])
        rows[t] = {"queries": int(known.sum()),
                   "top1_is_own": float(np.mean(a.argmax(1) == ids)),
                   "prior_top1_is_own": float(np.mean(np.argmax(p) == ids)),
                   "weight_on_own": float(np.mean(a[np.arange(len(ids)), ids])),
                   "prior_weight_on_own": float(np.mean(p[ids])),
                   "departure_from_prior": float(np.mean(0.5 * np.abs(a - p).sum(axis=1)))}
    columns = ["queries", "top1_is_own", "prior_top1_is_own", "weight_on_own", "prior_weight_on_own",
               "departure_from_prior"]  # also when no type has a known value
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype({"queries": int})


@dataclass(frozen=True)
class Disagreement:
    """Text -> image queries whose image one model ranks first and the other does not."""

    right: str  # the model that ranks the query's image first
    wrong: str  # the model that does not
    count: int  # how many queries
    examples: list  # up to n of their indices, drawn with the seed, ascending


def disagreements(ranks: dict, first: str, second: str, n: int = 2, seed: int = 0) -> tuple:
    """(`second` right and `first` wrong, `first` right and `second` wrong): the queries ranked top-1 by one
    model and not by the other, both ways, as Disagreement records.

    ranks[name] (N,): rank of the positive (0 = top-1). n example indices of each, drawn with `seed` so
    the examples do not always come from the file's start."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(ranks[first]), np.asarray(ranks[second])
    found = []
    for right, wrong, ra, rb in ((second, first, b, a), (first, second, a, b)):
        idx = np.flatnonzero((ra == 0) & (rb > 0))
        found.append(Disagreement(right, wrong, int(len(idx)), np.sort(rng.permutation(idx)[:n]).tolist()))
    return tuple(found)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign test p-value of `wins` against `losses` (1.0 when there is nothing to compare):
    are one-sided disagreements between two models more lopsided than a fair coin makes them?"""
    from scipy.stats import binomtest

    return float(binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0
