"""The sample-100 protocol (KaleidoBERT / FashionBERT): each query ranks its own product among 100
sampled negatives, drawn from its subcategory first (METHOD.md section 10), seeded and re-implementable.

Ranks follow the tie rule of eiclip_core.evaluation.metrics (lower candidate index wins a tie).
"""
import numpy as np
import torch

from eiclip_core.errors import KitError
from eiclip_core.evaluation.metrics import as_embeddings, count_beaten, exact_float32, metric_keys, recalls
from eiclip_core.protocols import SAMPLE100_NEGATIVES, sample100_unmeasurable  # noqa: F401 (re-exported)


def sample100_candidates(pids, subcategories, n_queries=1000, n_negatives=SAMPLE100_NEGATIVES, seed=0, repeat=0):
    """The query rows and candidate rows of one sample-100 repeat: (queries (Q,), candidates (Q, 1+n_neg)).

    The exact procedure, so it can be re-implemented anywhere (rows = products, one row each):
        rng = np.random.default_rng([seed, repeat])
        queries = rng.choice(n_products, size=n_queries, replace=False)
        for q in queries (in that order):
            same = rows with subcategory == subcategory[q], q excluded, ascending
            if len(same) >= n_negatives: negatives = rng.choice(same, n_negatives, replace=False)
            else: other = rows of other subcategories, ascending
                  negatives = same + rng.choice(other, n_negatives - len(same), replace=False)
            candidates = sorted([q] + negatives)   # by row, so a tie never favours the positive
    """
    pids, subs = np.asarray(pids), np.asarray(subcategories)
    n = len(pids)
    if subs.shape != (n,):
        raise KitError(f"sample-100: {n} product ids but subcategories of shape {subs.shape}")
    if len(np.unique(pids)) != n:
        raise KitError("sample-100: product ids must be unique (one image and one text per product)")
    too_few = sample100_unmeasurable(n, n_negatives)
    if too_few:
        raise KitError(f"sample-100: {too_few}")
    if not 1 <= n_queries <= n:
        raise KitError(f"sample-100: n_queries={n_queries} must be between 1 and the {n} products")
    rng = np.random.default_rng([seed, repeat])
    queries = rng.choice(n, size=n_queries, replace=False)
    by_sub = {s: np.flatnonzero(subs == s) for s in np.unique(subs)}
    candidates = np.empty((n_queries, n_negatives + 1), dtype=np.int64)
    for i, q in enumerate(queries):
        same = by_sub[subs[q]]
        same = same[same != q]
        if len(same) >= n_negatives:
            negatives = rng.choice(same, n_negatives, replace=False)
        else:
            other = np.flatnonzero(subs != subs[q])
            negatives = np.concatenate([same, rng.choice(other, n_negatives - len(same), replace=False)])
        candidates[i] = np.sort(np.concatenate([[q], negatives]))
    return queries, candidates


def sample100_metrics(image_emb, text_emb, pids, subcategories, n_queries=1000, n_negatives=SAMPLE100_NEGATIVES,
                      repeats=5, seed=0) -> dict:
    """Recall@1/5/10 (percent) under sample-100: mean over `repeats` seeded draws, and *_std keys.

    Row i of image_emb and text_emb belongs to pids[i]. Each query ranks its 1 + n_negatives
    candidates (see `sample100_candidates`) in both directions; the std is over repeats (ddof=0).
    """
    img = as_embeddings(image_emb, "image")
    txt = as_embeddings(text_emb, "text", device=img.device)
    if img.shape != txt.shape:
        raise KitError(f"sample-100: image embeddings {tuple(img.shape)} and text embeddings "
                       f"{tuple(txt.shape)} must have one row per product each")
    if len(pids) != len(img):
        raise KitError(f"sample-100: {len(pids)} product ids for {len(img)} embedding rows")
    per_repeat = []
    for r in range(repeats):
        queries, cands = sample100_candidates(pids, subcategories, n_queries, n_negatives, seed, r)
        per_repeat.append(recalls(_sampled_ranks(img, txt, queries, cands),
                                  _sampled_ranks(txt, img, queries, cands)))
    out = {k: float(np.mean([m[k] for m in per_repeat])) for k in metric_keys()}
    out.update({f"{k}_std": float(np.std([m[k] for m in per_repeat])) for k in metric_keys()})
    return out


def _sampled_ranks(query_emb, cand_emb, queries, cands, chunk=256) -> np.ndarray:
    """Rank of each query's own row among its sampled candidate rows (same tie rule)."""
    ranks = []
    queries_t, cands_t = torch.from_numpy(queries), torch.from_numpy(cands)
    with exact_float32():
        for s in range(0, len(queries), chunk):
            q = query_emb[queries_t[s:s + chunk].to(query_emb.device)]  # (B, d)
            c = cand_emb[cands_t[s:s + chunk].to(cand_emb.device)]  # (B, C, d)
            scores = torch.bmm(c, q[:, :, None])[:, :, 0]  # (B, C)
            pos = (cands_t[s:s + chunk] == queries_t[s:s + chunk, None]).int().argmax(dim=1, keepdim=True)
            index = torch.arange(cands.shape[1], device=scores.device)
            ranks.append(count_beaten(scores, pos.to(scores.device), index).cpu())
    return torch.cat(ranks).numpy()
