"""The counterfactual probe of notebook 05: a do-intervention on the query text.

A query that says "Olive slim-fit shirt" is edited to "Arrow slim-fit shirt" (brand A -> brand B),
or "slim" to "relaxed", everything else kept. If a model reads the entity, its text->image top-10
should move toward products that carry the new value; a model that reads "olive" as a colour moves
less or elsewhere. This is not a measurement of the paper; it asks the question the paper's causal
story implies (METHOD.md section 1): does the model respond to the entity, do(X = B)?

Per swapped query we measure the share of the top-k images whose product has the new value, before
and after the swap; the table gives their means in percent, the shift (after - before, in points),
the share of queries whose top-k moved toward the new value, and the chance level (share of the
gallery with the value).
"""
import zlib
from typing import Callable

import numpy as np
import pandas as pd

from eiclip_core.entities import OTHER

PROBE_TYPES = ("brand", "fit", "category")


def swap_value(text: str, mentions, entity_type: str, new_value: str) -> str:
    """`text` with every mention of `entity_type` replaced by `new_value`.

    mentions: (start, end, type, value) character spans of `text` (non-overlapping). Inside a span,
    only the value itself is replaced ("slim-fit" -> "relaxed-fit"); the new value takes the span's
    capitalisation (title or upper case)."""
    out, last = [], 0
    for start, end, t, value in sorted(mentions, key=lambda m: m[0]):
        if t != entity_type:
            continue
        span = text[start:end]
        pos = span.lower().find(str(value).lower())
        old = span[pos:pos + len(value)] if pos >= 0 else span
        new = new_value.upper() if old.isupper() and len(old) > 1 else (
            new_value.title() if old[:1].isupper() else new_value)
        out.append(text[last:start] + (span[:pos] + new + span[pos + len(value):] if pos >= 0 else new))
        last = end
    return "".join(out) + text[last:]


def choose_swaps(value_ids: np.ndarray, values: list, mentions: list, entity_type: str, n_queries: int,
                 seed: int = 0) -> list:
    """Seeded (query index, old value index, new value index) triples for one type.

    Queries: products whose value is known (not "other") and mentioned in their text. New value: drawn
    uniformly among the other known values that at least one gallery product carries (so the top-k can
    move toward it)."""
    ids = np.asarray(value_ids)
    known = [i for i in range(len(values)) if values[i] != OTHER]
    present = sorted(set(ids[(ids >= 0)].tolist()) & set(known))
    candidates = [q for q in range(len(ids)) if ids[q] in known
                  and any(m[2] == entity_type for m in mentions[q])]
    if len(present) < 2 or not candidates:
        return []
    rng = np.random.default_rng([seed, zlib.crc32(entity_type.encode())])  # own stream per type
    queries = np.sort(rng.permutation(candidates)[:n_queries])
    swaps = []
    for q in queries:
        choices = [v for v in present if v != ids[q]]
        swaps.append((int(q), int(ids[q]), int(choices[rng.integers(len(choices))])))
    return swaps


def top_k_share(text_emb: np.ndarray, image_emb: np.ndarray, gallery_values: np.ndarray, targets, k: int = 10):
    """Per query, the share of its top-k gallery items whose value equals its target -> (Q,).

    Ties are broken by gallery index (lower first), as in eiclip_core.evaluation.metrics."""
    scores = np.asarray(text_emb, np.float32) @ np.asarray(image_emb, np.float32).T  # (Q, N)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (np.asarray(gallery_values)[top] == np.asarray(targets)[:, None]).mean(axis=1)


def probe_type(encode: Callable, image_emb: np.ndarray, texts: list, mentions: list, value_ids: np.ndarray,
               values: list, entity_type: str, n_queries: int = 200, k: int = 10, seed: int = 0, text_emb=None):
    """One model, one type: per-query shares before and after the swap, plus the swapped texts.

    encode(list of texts) -> (Q, d) L2-normalised text features; image_emb (N, d) the gallery, row i
    = product i (the same products as texts / value_ids); text_emb (N, d): features of the unedited
    texts when already computed (else they are encoded). Returns a DataFrame (one row per query)."""
    swaps = choose_swaps(value_ids, values, mentions, entity_type, n_queries, seed)
    if not swaps:
        return pd.DataFrame(columns=["query", "old", "new", "text", "swapped", "before", "after"])
    q, old, new = (np.array(c) for c in zip(*swaps))
    originals = [texts[i] for i in q]
    swapped = [swap_value(texts[i], mentions[i], entity_type, values[b]) for i, b in zip(q, new)]
    original_emb = encode(originals) if text_emb is None else np.asarray(text_emb)[q]
    before = top_k_share(original_emb, image_emb, value_ids, new, k)
    after = top_k_share(encode(swapped), image_emb, value_ids, new, k)
    return pd.DataFrame({"query": q, "old": [values[a] for a in old], "new": [values[b] for b in new],
                         "text": originals, "swapped": swapped, "before": before, "after": after})


def run_probe(models: dict, texts: list, mentions: list, value_ids: dict, values: dict, types=PROBE_TYPES,
              n_queries: int = 200, k: int = 10, seed: int = 0) -> tuple:
    """The probe for several models on the same swaps.

    models: name -> (encode, image_emb, text_emb or None), as in probe_type. Returns (summary, details):
    summary has one row per (type, model) with `queries`, `chance_pct` (the gallery's share of the new
    value), `top_k_before_pct` / `top_k_after_pct` (the top-k's share of it, k as given), `shift_points`
    (after - before) and `queries_moved_pct` (queries whose top-k moved toward the new value), in percent;
    details maps (type, model) to the per-query frame of `probe_type`."""
    rows, details = [], {}
    for t in types:
        if t not in value_ids:
            continue
        ids = np.asarray(value_ids[t])
        for name, (encode, image_emb, text_emb) in models.items():
            df = probe_type(encode, image_emb, texts, mentions, ids, values[t], t, n_queries, k, seed, text_emb)
            details[(t, name)] = df
            if df.empty:
                continue
            new_idx = np.array([values[t].index(v) for v in df["new"]])
            rows.append({"type": t, "model": name, "queries": len(df),  # shares in percent of the top-k
                         "chance_pct": 100 * float(np.mean([np.mean(ids == v) for v in new_idx])),
                         "top_k_before_pct": 100 * float(df["before"].mean()),
                         "top_k_after_pct": 100 * float(df["after"].mean()),
                         "shift_points": 100 * float((df["after"] - df["before"]).mean()),
                         "queries_moved_pct": 100 * float(np.mean(df["after"] > df["before"]))})
    return pd.DataFrame(rows), details
