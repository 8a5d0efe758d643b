"""Scoring embeddings under the retrieval protocols (METHOD.md section 10, FASHIONGEN.md "Evaluation
protocols"): the full protocol, the full protocol over every view, sample-100, their bootstrap intervals,
the entity breakdown of the full protocol's queries, and retrieval examples.

`full_protocol` is the one full-protocol scorer: evaluation, the validation recall during training, the
confounding harm and the sweep all call it, so their recalls are one number computed one way.
"""
import numpy as np

from eiclip_core.errors import KitError
from eiclip_core.evaluation.embeddings import Embeddings
from eiclip_core.evaluation.metrics import KS, metric_keys, recalls, retrieval_ranks
from eiclip_core.evaluation.sample100 import sample100_metrics
from eiclip_core.protocols import PROTOCOLS, SAMPLE100_NEGATIVES

SPLIT = "validation"  # the split every protocol scores
BOOTSTRAP_SAMPLES = 1000


def full_protocol(emb: Embeddings, product_ids) -> dict:
    """{"metrics": recall@K in percent (metrics.metric_keys), "ranks": (i2t, t2i)} under the full protocol:
    each product's first view against one text per product, every product a query in both directions."""
    pids = np.asarray(product_ids)
    i2t, t2i = retrieval_ranks(emb.image[emb.first_view], emb.text, pids, pids)
    return {"metrics": recalls(i2t, t2i), "ranks": (i2t, t2i)}


def evaluate_embeddings(emb: Embeddings, product_ids, subcategories, protocols=PROTOCOLS,
                        n_sample_queries: int = 1000, seed: int = 0, bootstrap: int = BOOTSTRAP_SAMPLES) -> dict:
    """protocol -> {"metrics": ..., "n_queries", "n_candidates", "ranks": (i2t, t2i) or None}.

    Full protocols carry `<key>_ci` 95 % bootstrap intervals over queries; sample-100 its `*_std`.
    """
    pids = np.asarray(product_ids)
    n_prod = len(pids)
    out = {}
    for protocol in protocols:
        if protocol == "sample-100":
            m = sample100_metrics(emb.image[emb.first_view], emb.text, pids, subcategories,
                                  n_queries=min(n_sample_queries, n_prod), seed=seed)
            out[protocol] = {"metrics": m, "n_queries": min(n_sample_queries, n_prod),
                             "n_candidates": SAMPLE100_NEGATIVES + 1, "ranks": None}
            continue
        if protocol == "full":
            scored, n_images = full_protocol(emb, pids), n_prod
        elif protocol == "full-all-views":
            ranks = retrieval_ranks(emb.image, emb.text, pids[emb.image_product], pids)
            scored, n_images = {"metrics": recalls(*ranks), "ranks": ranks}, len(emb.image)
        else:
            raise KitError(f"protocol {protocol!r}: unknown (choose from {', '.join(PROTOCOLS)})")
        i2t, t2i = scored["ranks"]
        m = scored["metrics"]
        m.update(bootstrap_intervals(i2t, t2i, same_queries=protocol == "full", n=bootstrap, seed=seed))
        out[protocol] = {"metrics": m, "n_queries": {"i2t": n_images, "t2i": n_prod},
                         "n_candidates": {"i2t": n_prod, "t2i": n_images}, "ranks": (i2t, t2i)}
    return out


def bootstrap_intervals(i2t, t2i, same_queries: bool, n: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """95 % percentile intervals over queries for every metric key: {"<key>_ci": [lo, hi]}.

    same_queries: both directions have the same query products (full protocol), so they are resampled
    together; otherwise each direction's queries are resampled independently.
    """
    rng = np.random.default_rng([seed, 20220601])
    i2t, t2i = np.asarray(i2t), np.asarray(t2i)
    samples = {k: [] for k in metric_keys()}
    for start in range(0, n, 100):  # 100 resamples at a time: (100, n_queries) indices in memory
        b = min(100, n - start)
        a = rng.integers(0, len(i2t), (b, len(i2t)))
        c = a if same_queries else rng.integers(0, len(t2i), (b, len(t2i)))
        ranks = {"i2t": i2t[a], "t2i": t2i[c]}
        per_key = {f"{d}_r{k}": 100.0 * (ranks[d] < k).mean(axis=1) for d in ("i2t", "t2i") for k in KS}
        per_key["mean"] = np.mean(list(per_key.values()), axis=0)
        for k in samples:
            samples[k].append(per_key[k])
    return {f"{k}_ci": [float(np.percentile(np.concatenate(v), 2.5)), float(np.percentile(np.concatenate(v), 97.5))]
            for k, v in samples.items()}


def entity_breakdown(i2t, t2i, artifact, n_products: int) -> list[dict]:
    """Recall of the full protocol's queries grouped per entity type: prone versus not-prone values.

    A query (one per product in both directions) belongs to type t's "prone" group when its product's
    value of t is confounding-prone in the artifact, "not prone" when it has another value; products
    without a value of t are left out. Returns records (type, status, n, metric keys).
    """
    value_ids = artifact.value_ids(SPLIT)
    out = []
    for t in artifact.types:
        v = value_ids[t]
        if len(v) != n_products:
            raise KitError(f"{artifact.path}: {len(v)} {SPLIT} products for type {t!r}, the data has {n_products}")
        prone = np.zeros(n_products, dtype=bool)
        prone[v >= 0] = artifact.prone[t][v[v >= 0]]
        for status, mask in (("prone", (v >= 0) & prone), ("not prone", (v >= 0) & ~prone)):
            if mask.any():
                out.append({"type": t, "status": status, "n": int(mask.sum()),
                            **recalls(np.asarray(i2t)[mask], np.asarray(t2i)[mask])})
    return out


def retrieval_examples(emb: Embeddings, texts, n: int = 3, k: int = 5, seed: int = 0, queries=None) -> list[dict]:
    """Text queries with their top-k products (full protocol, first views, exact tie rule): the given
    `queries` (product indices), or n drawn with `seed`. Each: query (its own product is the positive),
    text, top, scores, rank (0-based rank of the positive); eiclip_core.figures draws them."""
    if queries is None:
        queries = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    images = emb.image[emb.first_view]
    out = []
    for q in queries:
        scores = images @ emb.text[q]
        order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then index asc
        out.append({"query": int(q), "text": texts[q], "top": order[:k].tolist(),
                    "scores": scores[order[:k]].tolist(), "rank": int(np.flatnonzero(order == q)[0])})
    return out
