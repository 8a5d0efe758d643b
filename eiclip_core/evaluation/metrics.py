"""Retrieval metrics: exact, tiled, deterministic recall@K under the protocols of METHOD.md section 10.

Rank of a query = the number of candidates that *beat* its best positive, where candidate j beats
candidate p when score_j > score_p, or score_j == score_p and j < p (ties broken by candidate index,
lower first, so every metric is deterministic). The best positive is the positive that no other
positive beats. A query is a hit at K when its rank < K, so K larger than the number of candidates
is always a hit. Several positives per query are allowed (several views of a product).

Both directions from one pass over S = images @ texts.T (`retrieval_ranks`; S is never held whole):
1. Every positive pair's score first, from GEMMs of a few hundred pairs (the diagonal of their
   product): per image and per text query, its best positive's score t and index b.
2. S once, in tiles (image rows x a block of texts, sized for the cache) in one reused buffer. A tile
   adds, for its image rows, the texts beating each row's best positive and, for its text columns,
   the images beating each column's: a candidate below b beats when s >= t, i.e.
   s > nextafter(t, -inf), one above b when s > t: one comparison per direction applies the tie rule.
   The tile holding b counts s > t, and also the scores equal to t.
3. The pass reads every positive pair's score from the tile that counted it. A query is recounted the
   one-direction way (`positive_ranks`) when its best positive read there (score or index) differs
   from step 1's (another GEMM shape can round differently), when its tile of b holds a score equal
   to t besides b (a tie: indices matter), or when t is within a denormal of 0 (s > nextafter(t, -inf)
   needs denormals, which flush-to-zero drops). So every rank compares a positive with the very
   numbers it competes against, and ties are exact.
Peak memory: two tiles of float32 (scores, comparisons: TILE_BYTES each), the GEMM's workspace and
a few hundred bytes per query.
One direction: chunks of queries x all candidates (one reused buffer), positives read from the same
rows, rank = scores > best plus, in the rare rows with ties, scores == best at a lower index.

CPU and GPU: scores are float32 on the device of the inputs (numpy arrays go to the CPU), with
TF32 matmuls switched off, so both devices compute the same float32 dot products; ranks can only
differ where two distinct scores are within float32 rounding (~1e-7) of each other.
"""
import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from eiclip_core.errors import KitError

KS = (1, 5, 10)
NORM_TOLERANCE = 1e-2  # fp16/bf16 encoders give norms within a few 1e-3 of 1 after normalising
# One tile of S. CPU: the tile, its comparisons and the text block stay in a 32 MiB L3 (counting a
# tile that spills to memory is several times slower); CUDA: big tiles keep kernel launches few.
# bench/retrieval.py times the tiled pass against the machine's matmul peak.
TILE_BYTES = {"cpu": 8 * 2**20, "cuda": 256 * 2**20}
TILE_ROWS = 1024  # most image rows per tile (chunk_size): ~1024 x 2048 tiles keep the GEMM near its peak
PAIR_GROUP = 256  # pairs per GEMM in step 1: big enough for the GEMM kernel the pass itself uses


def metric_keys(ks=KS) -> list[str]:
    """The keys of a metrics dict, in table order: i2t_r<k>..., t2i_r<k>..., mean."""
    return [f"i2t_r{k}" for k in ks] + [f"t2i_r{k}" for k in ks] + ["mean"]


def retrieval_metrics(image_emb, text_emb, image_pids, text_pids, ks=KS, chunk_size=TILE_ROWS) -> dict:
    """Recall@K in percent, image->text and text->image, with a match meaning "same product id".

    image_emb (N_img, d), text_emb (N_txt, d): L2-normalised, torch or numpy.
    image_pids (N_img,), text_pids (N_txt,): product ids; several rows may share one.
    Returns {"i2t_r1", ..., "t2i_r10", "mean"} (mean of all 2 x len(ks) recalls).
    """
    _check_ks(ks)
    return recalls(*retrieval_ranks(image_emb, text_emb, image_pids, text_pids, chunk_size), ks)


def recalls(i2t_ranks, t2i_ranks, ks=KS) -> dict:
    """Metrics dict (percent) from per-query ranks of both directions."""
    _check_ks(ks)
    out = {f"i2t_r{k}": 100.0 * float(np.mean(np.asarray(i2t_ranks) < k)) for k in ks}
    out.update({f"t2i_r{k}": 100.0 * float(np.mean(np.asarray(t2i_ranks) < k)) for k in ks})
    out["mean"] = float(np.mean([out[key] for key in metric_keys(ks)[:-1]]))
    return out


def retrieval_ranks(image_emb, text_emb, image_pids, text_pids, chunk_size=TILE_ROWS):
    """(i2t, t2i) int64 ranks of every image and every text query, from one pass over S (see top).

    chunk_size: the most image rows per tile; a tile spans as many texts as fit TILE_BYTES.
    Every image needs a text of its product and every text an image (else KitError).
    """
    img, txt = _embedding_pair(image_emb, text_emb, chunk_size, ("image", "text"))
    pos_i2t = _positive_index(image_pids, text_pids, len(img), len(txt), ("image", "text"))
    pos_t2i = _positive_index(text_pids, image_pids, len(txt), len(img), ("text", "image"))
    grid = TileGrid.for_pass(len(img), len(txt), chunk_size, img.device)
    with exact_float32():
        rows, cols, bounds = _pairs_by_tile(pos_i2t, grid, img.device)
        direct = _pair_scores(img, txt, rows, cols)
        images = _Queries.of(direct, rows, cols, len(img), grid.rows, grid.cols, len(grid.spans(1)))
        texts = _Queries.of(direct, cols, rows, len(txt), grid.cols, grid.rows, len(grid.spans(0)))
        seen = _one_pass(img, txt, grid, images, texts, (rows, cols, bounds))
        i2t = _recount_unconfirmed(images, seen, rows, cols, img, txt, pos_i2t, chunk_size)
        t2i = _recount_unconfirmed(texts, seen, cols, rows, txt, img, pos_t2i, chunk_size)
    return i2t, t2i


def positive_ranks(query_emb, cand_emb, query_pids, cand_pids, chunk_size=4096,
                   names=("query", "candidate")) -> np.ndarray:
    """Per query, the number of candidates that beat its best positive: int64 (N_query,).

    One direction only, so candidates without a query of their product are allowed; every query must
    have at least one candidate with its product id (else KitError).
    """
    q, c = _embedding_pair(query_emb, cand_emb, chunk_size, names)
    pos_idx = _positive_index(query_pids, cand_pids, len(q), len(c), names)  # (N_q, P)
    with exact_float32():
        return _row_ranks(q, c, pos_idx, chunk_size)


def _row_ranks(q, c, pos_idx, chunk_size) -> np.ndarray:
    """Ranks of queries q among candidates c, a chunk of query rows at a time (one reused buffer)."""
    pos_idx = torch.from_numpy(pos_idx).to(q.device)
    rows = min(chunk_size, len(q))
    buf = torch.empty(rows, len(c), device=q.device)
    ranks = torch.empty(len(q), dtype=torch.int64, device=q.device)
    cand_index = torch.arange(len(c), device=q.device)
    for start in range(0, len(q), rows):
        scores = torch.matmul(q[start:start + rows], c.T, out=buf[:min(rows, len(q) - start)])
        ranks[start:start + len(scores)] = count_beaten(scores, pos_idx[start:start + rows], cand_index)
    return ranks.cpu().numpy()


def count_beaten(scores, pos_idx, cand_index, rows_per_pass: int = 256):
    """scores (B, N), pos_idx (B, P) candidate indices of positives -> (B,) number beating the best."""
    pos_scores = scores.gather(1, pos_idx)  # (B, P)
    best = pos_scores.max(dim=1).values  # (B,)
    # the best positive's index: lowest index among positives scoring `best`
    best_idx = torch.where(pos_scores == best[:, None], pos_idx, scores.shape[1]).min(dim=1).values
    # Counting a mask as float32 is faster than an integer sum on CPU (ATen vectorises a comparison into the
    # inputs' dtype), and exact below 2^24.
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


@dataclass(frozen=True)
class TileGrid:
    """How S (n_rows images x n_cols texts) is cut into tiles of `rows` x `cols`.

    The last tile of each axis is shifted back to full size, so every GEMM of the pass has one shape
    (GEMM kernels can round differently for other shapes), and counts only what no tile before it did.
    """
    n_rows: int
    n_cols: int
    rows: int
    cols: int

    @classmethod
    def for_pass(cls, n_rows, n_cols, chunk_size, device) -> "TileGrid":
        """At most chunk_size rows, TILE_BYTES a tile; sizes evened out, so the last tile (shifted
        back) recomputes little: 30000 rows in tiles of 1000, not 29 of 1024 and one shifted by 720."""
        rows = _even_split(n_rows, chunk_size)
        cols = TILE_BYTES.get(torch.device(device).type, TILE_BYTES["cpu"]) // (4 * rows)
        return cls(n_rows, n_cols, rows, _even_split(n_cols, max(1, cols)))

    def spans(self, axis: int) -> list[tuple[int, int, int]]:
        """(start of the tile's GEMM, first counted index, end) along axis 0 (images) or 1 (texts)."""
        n, size = (self.n_rows, self.rows) if axis == 0 else (self.n_cols, self.cols)
        return [(min(lo, n - size), lo, min(lo + size, n)) for lo in range(0, n, size)]


def _even_split(n, most):
    """The size of ceil(n / most) near-equal parts of n (at most `most`)."""
    parts = -(-n // most)
    return -(-n // parts)


def _pairs_by_tile(pos_i2t, grid, device):
    """The positive (image, text) pairs, sorted by the tile that counts them: rows, cols, tile bounds."""
    flat = np.unique(np.arange(len(pos_i2t))[:, None] * grid.n_cols + pos_i2t)  # padding repeats dropped
    rows, cols = flat // grid.n_cols, flat % grid.n_cols
    n_ct = len(grid.spans(1))
    order, bounds = _by_tile(rows // grid.rows, cols // grid.cols, n_ct, len(grid.spans(0)) * n_ct)
    return torch.from_numpy(rows[order]).to(device), torch.from_numpy(cols[order]).to(device), bounds


@dataclass
class _Queries:
    """One direction's queries during the pass: best positive, counts so far, and which tile holds b."""
    best: torch.Tensor  # (n,) score of the best positive, t
    below: torch.Tensor  # nextafter(t, -inf): s > below is s >= t
    index: torch.Tensor  # (n,) candidate index of the best positive, b
    count: torch.Tensor  # (n,) int64 candidates beating it, so far
    equal: torch.Tensor  # (n,) scores equal to t in the tile holding b (b itself included)
    b_order: torch.Tensor  # queries sorted by (own tile, tile holding b)
    b_bounds: np.ndarray  # tile pair k's queries: b_order[b_bounds[k]:b_bounds[k + 1]]

    @classmethod
    def of(cls, scores, query, cand, n, own_block, cand_block, n_cand_tiles) -> "_Queries":
        best, index = _best_positive(scores, query, cand, n)
        order, bounds = _by_tile(np.arange(n) // own_block, index.cpu().numpy() // cand_block,
                                 n_cand_tiles, -(-n // own_block) * n_cand_tiles)
        below = torch.nextafter(best, torch.tensor(-torch.inf, device=best.device))
        zeros = torch.zeros(n, dtype=torch.int64, device=best.device)
        return cls(best, below, index, zeros, zeros.clone(), torch.from_numpy(order).to(best.device), bounds)


def _by_tile(major, minor, n_minor, n_keys):
    """Items sorted by tile pair: key k = major * n_minor + minor holds order[bounds[k]:bounds[k + 1]]."""
    key = major * n_minor + minor
    order = np.argsort(key, kind="stable")
    return order, np.searchsorted(key[order], np.arange(n_keys + 1))


def _pair_scores(img, txt, rows, cols, group=PAIR_GROUP) -> torch.Tensor:
    """Each pair's score, read off the diagonal of (group x group) GEMMs.

    Why a GEMM rather than a row-wise dot product: dot kernels (MKL's, for one) round most entries
    differently from the GEMM the pass uses, so nearly every query would be recounted.
    The last group is shifted back, so every GEMM has the same shape.
    """
    out = torch.empty(len(rows), device=img.device)
    for end in range(min(group, len(rows)), len(rows) + group, group):
        end = min(end, len(rows))
        start = max(0, end - group)
        out[start:end] = (img[rows[start:end]] @ txt[cols[start:end]].T).diagonal()
    return out


def _best_positive(scores, query, cand, n):
    """Per query, the best positive's score and index (lowest index among those at the best score)."""
    best = torch.full((n,), -torch.inf, device=scores.device).scatter_reduce(0, query, scores, "amax")
    at_best = torch.where(scores == best[query], cand, torch.iinfo(torch.int64).max)
    index = torch.full((n,), torch.iinfo(torch.int64).max, device=scores.device)
    return best, index.scatter_reduce(0, query, at_best, "amin")


def _one_pass(img, txt, grid, images, texts, pairs) -> torch.Tensor:
    """Count both directions over every tile of S; return each pair's score as its tile computed it."""
    buf = torch.empty(grid.rows, grid.cols, device=img.device)
    hits = torch.empty(grid.rows, grid.cols, device=img.device)
    pair_rows, pair_cols, bounds = pairs
    seen = torch.empty(len(pair_rows), device=img.device)
    col_spans = grid.spans(1)
    for rt, (r_start, r_lo, r_hi) in enumerate(grid.spans(0)):
        for ct, (c_start, c_lo, c_hi) in enumerate(col_spans):
            torch.matmul(img[r_start:r_start + grid.rows], txt[c_start:c_start + grid.cols].T, out=buf)
            tile = buf[r_lo - r_start:r_hi - r_start, c_lo - c_start:c_hi - c_start]
            k = slice(*bounds[rt * len(col_spans) + ct:][:2])
            seen[k] = tile[pair_rows[k] - r_lo, pair_cols[k] - c_lo]
            _count_tile(tile, hits[:r_hi - r_lo, :c_hi - c_lo], images, r_lo, c_lo, rt * len(col_spans) + ct)
            # the scores' last use: the text columns' comparison overwrites them
            _count_tile(tile.T, tile.T, texts, c_lo, r_lo, ct * len(grid.spans(0)) + rt)
    return seen


def _count_tile(tile, hits, q, q_lo, cand_lo, key):
    """Add to q.count the candidates of this tile (columns) beating each query's (row's) best positive.

    hits: where the comparison goes, as float32 (1.0 = beats): ATen vectorises a comparison into the
    inputs' dtype, not into bool, and summing it is exact below 2^24; it may be the tile itself.
    """
    q_hi, cand_hi = q_lo + tile.shape[0], cand_lo + tile.shape[1]
    who = q.b_order[q.b_bounds[key]:q.b_bounds[key + 1]]
    if len(who):  # queries whose b is in this tile: an equal score at a lower index would beat b
        q.equal[who] = (tile[who - q_lo] == q.best[who, None]).sum(1)
    # all candidates here below b: beat when >= t; above b, or b in this tile: when > t
    threshold = torch.where(q.index[q_lo:q_hi] >= cand_hi, q.below[q_lo:q_hi], q.best[q_lo:q_hi])
    q.count[q_lo:q_hi] += torch.gt(tile, threshold[:, None], out=hits).sum(1).long()


def _recount_unconfirmed(q, seen, query, cand, q_emb, c_emb, pos_idx, chunk_size) -> np.ndarray:
    """q's ranks, with the queries the pass could not settle (step 3 at the top) recounted."""
    best, index = _best_positive(seen, query, cand, len(q.best))
    tiny = torch.finfo(torch.float32).tiny
    redo = (best != q.best) | (index != q.index) | (q.equal > 1)
    redo |= (q.below.abs() < tiny) | (q.best.abs() < tiny)
    redo = redo.nonzero().flatten().cpu().numpy()
    ranks = q.count.cpu().numpy()
    if len(redo):
        ranks[redo] = _row_ranks(q_emb[redo], c_emb, pos_idx[redo], chunk_size)
    return ranks


def _embedding_pair(query_emb, cand_emb, chunk_size, names):
    """Both embeddings as checked float32 tensors on the query's device (KitError otherwise)."""
    q = as_embeddings(query_emb, names[0])
    c = as_embeddings(cand_emb, names[1], device=q.device)
    if q.shape[1] != c.shape[1]:
        raise KitError(f"{names[0]} embeddings have dimension {q.shape[1]} but {names[1]} embeddings "
                       f"have {c.shape[1]}")
    if chunk_size < 1:
        raise KitError(f"chunk_size={chunk_size}: must be a positive integer")
    return q, c


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


def as_embeddings(x, name, device=None) -> torch.Tensor:
    """Float32 2-D tensor of finite, L2-normalised rows (KitError otherwise)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise KitError(f"{name} embeddings: expected a torch tensor or numpy array, got {type(x).__name__}")
    x = x.detach()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise KitError(f"{name} embeddings: expected a non-empty (N, d) array, got shape {tuple(x.shape)}")
    x = x.to(device=device if device is not None else x.device, dtype=torch.float32)
    norms = x.norm(dim=1)  # NaN or inf wherever an entry is: checking the norms needs no (N, d) mask
    if not torch.isfinite(norms).all() and not torch.isfinite(x).all():
        raise KitError(f"{name} embeddings: contain NaN or infinite values")
    worst = (norms - 1).abs().max().item()
    if worst > NORM_TOLERANCE:
        raise KitError(f"{name} embeddings: rows are not L2-normalised (a norm differs from 1 by "
                       f"{worst:.3g}); normalise them (F.normalize) before computing recall")
    return x


@contextlib.contextmanager
def exact_float32():
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
