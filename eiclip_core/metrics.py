"""Retrieval metrics: exact, chunked, deterministic recall@K under the protocols of METHOD.md section 10.

Rank of a query = the number of candidates that *beat* its best positive, where candidate j beats
candidate p when score_j > score_p, or score_j == score_p and j < p (ties broken by candidate index,
lower first, so every metric is deterministic). The best positive is the positive that no other
positive beats. A query is a hit at K when its rank < K, so K larger than the number of candidates
is always a hit. Several positives per query are allowed (several views of a product).

How it is computed (and why it is exact without an N x N matrix or an argsort):
for each chunk of `chunk_size` queries, scores = queries @ candidates.T ((chunk, N_cand) float32);
the positives' scores are gathered from that same matrix (so a positive is compared with the very
numbers it competes against), and the rank is two counts over the row: scores > best and, for the
rare rows with ties, scores == best at a lower index. Peak memory is about chunk_size x N_cand x 4
bytes (the float32 scores) plus 256 x N_cand x 5 bytes (masks, counted a few rows at a time) plus
the embeddings.

CPU and GPU: scores are float32 on the device of the inputs (numpy arrays go to the CPU), with
TF32 matmuls switched off, so both devices compute the same float32 dot products; ranks can only
differ where two distinct scores are within float32 rounding (~1e-7) of each other.
"""
import contextlib

import numpy as np
import torch

from eiclip_core.errors import KitError

KS = (1, 5, 10)
NORM_TOLERANCE = 1e-2  # fp16/bf16 encoders give norms within a few 1e-3 of 1 after normalising


def metric_keys(ks=KS) -> list[str]:
    """The keys of a metrics dict, in table order: i2t_r<k>..., t2i_r<k>..., mean."""
    return [f"i2t_r{k}" for k in ks] + [f"t2i_r{k}" for k in ks] + ["mean"]


def retrieval_metrics(image_emb, text_emb, image_pids, text_pids, ks=KS, chunk_size=4096) -> dict:
    """Recall@K in percent, image->text and text->image, with a match meaning "same product id".

    image_emb (N_img, d), text_emb (N_txt, d): L2-normalised, torch or numpy.
    image_pids (N_img,), text_pids (N_txt,): product ids; several rows may share one.
    Returns {"i2t_r1", ..., "t2i_r10", "mean"} (mean of all 2 x len(ks) recalls).
    """
    i2t = positive_ranks(image_emb, text_emb, image_pids, text_pids, chunk_size, names=("image", "text"))
    t2i = positive_ranks(text_emb, image_emb, text_pids, image_pids, chunk_size, names=("text", "image"))
    return recalls(i2t, t2i, ks)


def recalls(i2t_ranks, t2i_ranks, ks=KS) -> dict:
    """Metrics dict (percent) from per-query ranks of both directions."""
    _check_ks(ks)
    out = {f"i2t_r{k}": 100.0 * float(np.mean(np.asarray(i2t_ranks) < k)) for k in ks}
    out.update({f"t2i_r{k}": 100.0 * float(np.mean(np.asarray(t2i_ranks) < k)) for k in ks})
    out["mean"] = float(np.mean([out[key] for key in metric_keys(ks)[:-1]]))
    return out


def positive_ranks(query_emb, cand_emb, query_pids, cand_pids, chunk_size=4096,
                   names=("query", "candidate")) -> np.ndarray:
    """Per query, the number of candidates that beat its best positive: int64 (N_query,).

    Every query must have at least one candidate with its product id (else KitError).
    """
    q = _as_embeddings(query_emb, names[0])
    c = _as_embeddings(cand_emb, names[1], device=q.device)
    if q.shape[1] != c.shape[1]:
        raise KitError(f"{names[0]} embeddings have dimension {q.shape[1]} but {names[1]} embeddings "
                       f"have {c.shape[1]}")
    if chunk_size < 1:
        raise KitError(f"chunk_size={chunk_size}: must be a positive integer")
    pos_idx = _positive_index(query_pids, cand_pids, len(q), len(c), names)  # (N_q, P)
    pos_idx = torch.from_numpy(pos_idx).to(q.device)
    ranks = torch.empty(len(q), dtype=torch.int64)
    cand_index = torch.arange(len(c), device=q.device)
    with _exact_float32():
        for start in range(0, len(q), chunk_size):
            scores = q[start:start + chunk_size] @ c.T  # (B, N_cand)
            ranks[start:start + len(scores)] = _count_beaten(scores, pos_idx[start:start + chunk_size],
                                                             cand_index).cpu()
            del scores  # free this chunk before the next one is allocated: one chunk alive at a time
    return ranks.numpy()


def _count_beaten(scores, pos_idx, cand_index, rows_per_pass: int = 256):
    """scores (B, N), pos_idx (B, P) candidate indices of positives -> (B,) number beating the best."""
    pos_scores = scores.gather(1, pos_idx)  # (B, P)
    best = pos_scores.max(dim=1).values  # (B,)
    # the best positive's index: lowest index among positives scoring `best`
    best_idx = torch.where(pos_scores == best[:, None], pos_idx, scores.shape[1]).min(dim=1).values
    # Counting a mask as float32 is ~2x faster than an integer sum on CPU, and exact below 2^24.
    count_dtype = torch.float32 if scores.shape[1] < 2 ** 24 else torch.float64
    above = torch.empty(len(scores), dtype=count_dtype, device=scores.device)
    equal = torch.empty_like(above)
    # a few rows at a time, so the comparison masks (and the float copies the sums make of them)
    # stay small next to the scores
    for r in range(0, len(scores), rows_per_pass):
        block, b = scores[r:r + rows_per_pass], best[r:r + rows_per_pass, None]
        above[r:r + rows_per_pass] = (block > b).to(count_dtype).sum(dim=1)
        equal[r:r + rows_per_pass] = (block == b).to(count_dtype).sum(dim=1)  # includes the best itself
    above = above.long()
    tied = (equal > 1).nonzero().flatten()
    if len(tied):  # rare: only rows with an exact tie pay for the index comparison
        rows = scores[tied]
        ahead = (rows == best[tied, None]) & (cand_index[None, :] < best_idx[tied, None])
        above[tied] += ahead.sum(dim=1)
    return above


def _positive_index(query_pids, cand_pids, n_query, n_cand, names) -> np.ndarray:
    """(N_query, P) candidate indices of each query's positives, padded by repeating the first one."""
    qp, cp = np.asarray(query_pids), np.asarray(cand_pids)
    if qp.shape != (n_query,) or cp.shape != (n_cand,):
        raise KitError(f"product ids: expected {names[0]} ids of shape ({n_query},) and {names[1]} ids of "
                       f"shape ({n_cand},), got {qp.shape} and {cp.shape}")
    codes, inverse = np.unique(np.concatenate([qp, cp]), return_inverse=True)
    q_code, c_code = inverse[:n_query], inverse[n_query:]
    order = np.argsort(c_code, kind="stable")  # candidates grouped by product, index ascending
    counts = np.bincount(c_code, minlength=len(codes))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_pos = counts[q_code]
    if (n_pos == 0).any():
        missing = qp[np.flatnonzero(n_pos == 0)[0]]
        raise KitError(f"{names[0]} query with product id {missing!r} has no {names[1]} of the same "
                       f"product among the candidates ({int((n_pos == 0).sum())} such queries)")
    width = int(n_pos.max())
    offsets = np.minimum(np.arange(width)[None, :], n_pos[:, None] - 1)  # pad = repeat a positive
    return order[first[q_code][:, None] + offsets].astype(np.int64)


def _as_embeddings(x, name, device=None) -> torch.Tensor:
    """Float32 2-D tensor of finite, L2-normalised rows (KitError otherwise)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise KitError(f"{name} embeddings: expected a torch tensor or numpy array, got {type(x).__name__}")
    x = x.detach()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise KitError(f"{name} embeddings: expected a non-empty (N, d) array, got shape {tuple(x.shape)}")
    x = x.to(device=device if device is not None else x.device, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise KitError(f"{name} embeddings: contain NaN or infinite values")
    norms = x.norm(dim=1)
    worst = (norms - 1).abs().max().item()
    if worst > NORM_TOLERANCE:
        raise KitError(f"{name} embeddings: rows are not L2-normalised (a norm differs from 1 by "
                       f"{worst:.3g}); normalise them (F.normalize) before computing recall")
    return x


@contextlib.contextmanager
def _exact_float32():
    """Switch TF32 matmuls off on GPU so scores are true float32, as on the CPU."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def _check_ks(ks):
    if len(ks) == 0 or any(int(k) != k or k < 1 for k in ks):
        raise KitError(f"ks={tuple(ks)}: recall cut-offs must be positive integers")


# ---------------------------------------------------------------------------------------------
# sample-100 (KaleidoBERT / FashionBERT protocol, seeded)


def sample100_candidates(pids, subcategories, n_queries=1000, n_negatives=100, seed=0, repeat=0):
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
    if n < n_negatives + 1:
        raise KitError(f"sample-100: {n} products, fewer than the {n_negatives + 1} candidates a query needs")
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


def sample100_metrics(image_emb, text_emb, pids, subcategories, n_queries=1000, n_negatives=100,
                      repeats=5, seed=0) -> dict:
    """Recall@1/5/10 (percent) under sample-100: mean over `repeats` seeded draws, and *_std keys.

    Row i of image_emb and text_emb belongs to pids[i]. Each query ranks its 1 + n_negatives
    candidates (see `sample100_candidates`) in both directions; the std is over repeats (ddof=0).
    """
    img = _as_embeddings(image_emb, "image")
    txt = _as_embeddings(text_emb, "text", device=img.device)
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
    with _exact_float32():
        for s in range(0, len(queries), chunk):
            q = query_emb[queries_t[s:s + chunk].to(query_emb.device)]  # (B, d)
            c = cand_emb[cands_t[s:s + chunk].to(cand_emb.device)]  # (B, C, d)
            scores = torch.bmm(c, q[:, :, None])[:, :, 0]  # (B, C)
            pos = (cands_t[s:s + chunk] == queries_t[s:s + chunk, None]).int().argmax(dim=1, keepdim=True)
            index = torch.arange(cands.shape[1], device=scores.device)
            ranks.append(_count_beaten(scores, pos.to(scores.device), index).cpu())
    return torch.cat(ranks).numpy()
