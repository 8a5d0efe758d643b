"""Retrieval metrics: hand-computed cases, a slow obviously-correct reference, chunking and tiling, bad input.

Tie tests use "dyadic" embeddings (entries +-1/4 in d=16, or unit basis vectors) whose dot products
are exact in float32 whatever the summation order, so planted ties really are ties.
"""
from unittest.mock import patch

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eiclip_core.evaluation import metrics
from eiclip_core.errors import KitError
from eiclip_core.evaluation.metrics import positive_ranks, retrieval_metrics, retrieval_ranks
from eiclip_core.evaluation.sample100 import sample100_candidates, sample100_metrics

E = np.eye(4, dtype=np.float32)
H = np.full(4, 0.5, dtype=np.float32)  # unit norm, dot with a basis vector = 0.5
H2 = np.array([0.5, -0.5, 0.5, 0.5], dtype=np.float32)


def reference_ranks(query, cand, qpids, cpids):
    """Full sort of every row by (score desc, index asc); rank = position of the first positive."""
    scores = np.asarray(query, np.float32) @ np.asarray(cand, np.float32).T
    ranks = []
    for i in range(len(query)):
        order = sorted(range(len(cand)), key=lambda j: (-scores[i, j], j))
        ranks.append(next(pos for pos, j in enumerate(order) if cpids[j] == qpids[i]))
    return np.array(ranks)


def reference_metrics(img, txt, ipids, tpids, ks=(1, 5, 10)):
    i2t, t2i = reference_ranks(img, txt, ipids, tpids), reference_ranks(txt, img, tpids, ipids)
    out = {f"i2t_r{k}": 100 * np.mean(i2t < k) for k in ks}
    out.update({f"t2i_r{k}": 100 * np.mean(t2i < k) for k in ks})
    out["mean"] = np.mean(list(out.values()))
    return out


def dyadic(rng, n, n_distinct, d=16):
    """n unit rows drawn from n_distinct sign patterns / 4: many exact duplicates and exact ties."""
    pool = rng.choice([-0.25, 0.25], size=(n_distinct, d)).astype(np.float32)
    return pool[rng.integers(0, n_distinct, n)]


def gaussian(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ties_are_broken_by_lower_candidate_index():
    img = np.stack([E[0], E[0], E[1]])  # products B, A, C
    txt = np.stack([E[0], E[0], E[1]])  # products A, B, C
    m = retrieval_metrics(img, txt, ["B", "A", "C"], ["A", "B", "C"])
    # image 0 (B): its text is index 1, tied with text 0 (lower index) -> rank 1; image 1 (A): rank 0
    assert m["i2t_r1"] == pytest.approx(200 / 3)
    assert m["t2i_r1"] == pytest.approx(200 / 3)  # text 0 (A): image 0 (B) ties ahead of image 1 (A)
    np.testing.assert_array_equal(positive_ranks(img, txt, ["B", "A", "C"], ["A", "B", "C"]), [1, 0, 0])
    # k above the 3 candidates: always a hit
    assert m["i2t_r5"] == m["i2t_r10"] == m["t2i_r5"] == m["t2i_r10"] == 100.0
    assert m["mean"] == pytest.approx((200 / 3 * 2 + 400) / 6)
    assert list(m) == ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean"]


def test_several_views_per_product_best_view_counts():
    # text of product A = e0; images: h (B, 0.5), e1 (A, 0), h2 (A, 0.5), e2 (C, 0)
    txt = np.stack([E[0], E[1], E[2]])
    img = np.stack([H, E[1], H2, E[2]])
    ipids, tpids = ["B", "A", "A", "C"], ["A", "B", "C"]
    t2i = positive_ranks(txt, img, tpids, ipids)
    # text A: best view is h2 (0.5, index 2); h at index 0 ties and is lower -> rank 1
    # text B (e1): its only image h scores 0.5, image 1 (A, e1) scores 1 -> rank 1
    # text C (e2): image 3 scores 1, nothing beats it -> rank 0
    np.testing.assert_array_equal(t2i, [1, 1, 0])
    # image->text: each image's product has one text; images 1 and 2 share product A's text
    i2t = positive_ranks(img, txt, ipids, tpids)
    # h scores 0.5 with every text: B's text (index 1) is beaten by A's (index 0) -> rank 1;
    # e1 (A) scores 0 with A's text, 1 with B's -> rank 1; h2 (A) scores 0.5, -0.5, 0.5 -> rank 0
    np.testing.assert_array_equal(i2t, [1, 1, 0, 0])
    m = retrieval_metrics(img, txt, ipids, tpids, ks=(1, 2))
    assert m == pytest.approx({"i2t_r1": 50.0, "i2t_r2": 100.0, "t2i_r1": 100 / 3, "t2i_r2": 100.0,
                               "mean": (50 + 100 + 100 / 3 + 100) / 4})


def test_several_texts_per_product_in_image_to_text():
    img = np.stack([E[0]])
    txt = np.stack([E[1], E[0], H])  # product A has texts 1 and 2; text 0 is B
    np.testing.assert_array_equal(positive_ranks(img, txt, ["A"], ["B", "A", "A"]), [0])
    np.testing.assert_array_equal(positive_ranks(img, txt, ["B"], ["B", "A", "A"]), [2])


@pytest.mark.parametrize("make", ["dyadic", "gaussian"])
def test_matches_slow_reference_on_random_data(make):
    rng = np.random.default_rng(7)
    n_prod = 60
    tpids = rng.permutation(n_prod) + 1000
    ipids = np.concatenate([tpids, rng.choice(tpids, 40)])  # some products with 2-3 views
    rng.shuffle(ipids)
    if make == "dyadic":
        img, txt = dyadic(rng, len(ipids), 12), dyadic(rng, n_prod, 12)
    else:
        img, txt = gaussian(rng, len(ipids)), gaussian(rng, n_prod)
    ks = (1, 3, 5, 10, 200)
    np.testing.assert_array_equal(positive_ranks(img, txt, ipids, tpids, chunk_size=16),
                                  reference_ranks(img, txt, ipids, tpids))
    np.testing.assert_array_equal(positive_ranks(txt, img, tpids, ipids, chunk_size=16),
                                  reference_ranks(txt, img, tpids, ipids))
    assert retrieval_metrics(img, txt, ipids, tpids, ks=ks) == pytest.approx(
        reference_metrics(img, txt, ipids, tpids, ks))


def test_chunk_size_does_not_change_results():
    rng = np.random.default_rng(1)
    img, txt = dyadic(rng, 150, 20), dyadic(rng, 150, 20)
    pids = np.arange(150)
    results = [retrieval_metrics(img, txt, pids, pids, chunk_size=c) for c in (1, 7, 64, 150, 10_000)]
    assert all(r == results[0] for r in results)


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(2)
    img, txt = gaussian(rng, 80), gaussian(rng, 80)
    pids = np.arange(80)
    a = retrieval_metrics(img, txt, pids, pids)
    b = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.arange(80).numpy(), list(pids))
    c = retrieval_metrics(torch.from_numpy(img).half(), torch.from_numpy(txt).half(), pids, pids)
    assert a == b
    assert set(c) == set(a)  # half precision inputs are accepted (cast to float32)


@pytest.mark.parametrize("case, message", [
    (lambda e: retrieval_metrics(e[:, :4] / np.linalg.norm(e[:, :4], axis=1, keepdims=True), e,
                                 range(5), range(5)), "dimension"),
    (lambda e: retrieval_metrics(e, e, range(4), range(5)), "shape"),
    (lambda e: retrieval_metrics(e * 2, e, range(5), range(5)), "not L2-normalised"),
    (lambda e: retrieval_metrics(np.where(e > 0, np.nan, e), e, range(5), range(5)), "NaN"),
    (lambda e: retrieval_metrics(e[:0], e, [], range(5)), "non-empty"),
    (lambda e: retrieval_metrics(e[0], e, [0], range(5)), "non-empty"),
    (lambda e: retrieval_metrics(e, e, range(5), range(1, 6)), "no text"),
    (lambda e: retrieval_metrics(e, e, range(5), range(5), ks=(0,)), "positive integers"),
    (lambda e: retrieval_metrics(e, e, range(5), range(5), chunk_size=0), "chunk_size"),
    (lambda e: retrieval_metrics(e.tolist(), e, range(5), range(5)), "numpy array"),
])
def test_bad_inputs_raise_kit_error(case, message):
    emb = gaussian(np.random.default_rng(3), 5, d=16)
    with pytest.raises(KitError, match=message):
        case(emb)


# ---- sample-100


def _sample_data(n=400, n_subs=6, seed=0):
    rng = np.random.default_rng(seed)
    subs = np.array([f"sub{i}" for i in rng.integers(0, n_subs, n)])
    subs[:5] = "tiny"  # a subcategory smaller than 100: topped up from others
    img = gaussian(rng, n, d=8)
    txt = img + 1.5 * gaussian(rng, n, d=8)
    return img, txt / np.linalg.norm(txt, axis=1, keepdims=True), rng.permutation(n) * 3 + 11, subs


def test_sample100_candidates_follow_the_protocol():
    _, _, pids, subs = _sample_data()
    queries, cands = sample100_candidates(pids, subs, n_queries=50, n_negatives=100, seed=4)
    assert len(set(queries)) == 50 and cands.shape == (50, 101)
    for q, row in zip(queries, cands):
        assert q in row and len(set(row)) == 101 and (np.diff(row) > 0).all()
        same = np.flatnonzero(subs == subs[q])
        negatives = row[row != q]
        if len(same) - 1 >= 100:
            assert (subs[negatives] == subs[q]).all()
        else:  # all of the small subcategory, topped up from others
            assert set(same) <= set(row) and (subs[negatives] != subs[q]).sum() == 101 - len(same)


def test_sample100_is_deterministic_by_seed_and_changes_with_seed():
    img, txt, pids, subs = _sample_data()
    a = sample100_metrics(img, txt, pids, subs, n_queries=200, seed=0)
    b = sample100_metrics(torch.from_numpy(img), torch.from_numpy(txt), pids, subs, n_queries=200, seed=0)
    c = sample100_metrics(img, txt, pids, subs, n_queries=200, seed=1)
    assert a == b and a != c
    assert a["i2t_r1_std"] > 0 and set(a) == {k for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1",
                                                            "t2i_r5", "t2i_r10", "mean")
                                              for k in (key, key + "_std")}


def test_sample100_matches_reference_over_sampled_candidates():
    img, txt, pids, subs = _sample_data(n=300)
    m = sample100_metrics(img, txt, pids, subs, n_queries=120, repeats=3, seed=5)
    per_repeat = []
    for r in range(3):
        queries, cands = sample100_candidates(pids, subs, 120, 100, seed=5, repeat=r)
        i2t = [reference_ranks(img[[q]], txt[c], [pids[q]], pids[c])[0] for q, c in zip(queries, cands)]
        t2i = [reference_ranks(txt[[q]], img[c], [pids[q]], pids[c])[0] for q, c in zip(queries, cands)]
        per_repeat.append([100 * np.mean(np.array(x) < k) for x in (i2t, t2i) for k in (1, 5, 10)])
    per_repeat = np.array(per_repeat)
    expected = dict(zip(["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"], per_repeat.mean(0)))
    assert {k: m[k] for k in expected} == pytest.approx(expected)
    assert m["mean"] == pytest.approx(per_repeat.mean())
    assert m["t2i_r5_std"] == pytest.approx(per_repeat[:, 4].std())


def test_sample100_bad_inputs():
    img, txt, pids, subs = _sample_data(n=120)
    with pytest.raises(KitError, match="unique"):
        sample100_metrics(img, txt, np.zeros(120), subs, n_queries=10)
    with pytest.raises(KitError, match="fewer than the 101"):
        sample100_metrics(img[:50], txt[:50], pids[:50], subs[:50], n_queries=10)
    with pytest.raises(KitError, match="n_queries"):
        sample100_metrics(img, txt, pids, subs, n_queries=500)
    with pytest.raises(KitError, match="one row per product"):
        sample100_metrics(img, txt[:100], pids, subs, n_queries=10)


# ---- one pass for both directions (retrieval_ranks)


def tied_products(rng, n_products, n_patterns, biased):
    """Texts (1-2 per product) and images (1-3 views) of shuffled products, drawn from n_patterns dyadic
    rows: exact ties everywhere. biased: the first 10 of 16 entries are +1/4, so no score is 0."""
    tpids = np.repeat(np.arange(n_products), rng.integers(1, 3, n_products))
    ipids = np.repeat(np.arange(n_products), rng.integers(1, 4, n_products))
    rng.shuffle(tpids)
    rng.shuffle(ipids)
    img, txt = dyadic(rng, len(ipids), n_patterns), dyadic(rng, len(tpids), n_patterns)
    if biased:
        img[:, :10] = txt[:, :10] = 0.25
    return img, txt, ipids * 7 + 3, tpids * 7 + 3


@settings(max_examples=150)
@given(seed=st.integers(0, 2**32 - 1), n_products=st.integers(1, 12), n_patterns=st.integers(1, 6),
       biased=st.booleans(), rows=st.integers(1, 9), cols=st.integers(1, 12))
def test_one_pass_matches_reference_for_any_tiling(seed, n_products, n_patterns, biased, rows, cols):
    img, txt, ipids, tpids = tied_products(np.random.default_rng(seed), n_products, n_patterns, biased)
    with patch.dict(metrics.TILE_BYTES, {"cpu": 4 * rows * cols}):  # tiles of rows x cols
        i2t, t2i = retrieval_ranks(img, txt, ipids, tpids, chunk_size=rows)
    np.testing.assert_array_equal(i2t, reference_ranks(img, txt, ipids, tpids))
    np.testing.assert_array_equal(t2i, reference_ranks(txt, img, tpids, ipids))


def test_one_pass_settles_ties_outside_the_positives_tile_itself(monkeypatch):
    # one image and one text per product, same vectors: H ties H, E0 ties E0
    vectors = np.stack([H, E[0], E[1], H, E[0], H])
    pids = np.arange(6)
    expected = [0, 0, 0, 1, 1, 2]  # product 3's H ties product 0's (lower: beats) and 5's (higher)
    recounted = []
    monkeypatch.setattr(metrics, "_row_ranks", lambda q, *a: recounted.append(len(q)) or np.zeros(len(q)))
    with patch.dict(metrics.TILE_BYTES, {"cpu": 4 * 2 * 2}):  # 2 x 2 tiles: no tie shares b's tile
        i2t, t2i = retrieval_ranks(vectors, vectors, pids, pids, chunk_size=2)
    np.testing.assert_array_equal(i2t, expected)
    np.testing.assert_array_equal(t2i, expected)
    assert recounted == []
    monkeypatch.undo()
    with patch.dict(metrics.TILE_BYTES, {"cpu": 4 * 6 * 6}):  # one tile: the ties share it, recounted
        assert [r.tolist() for r in retrieval_ranks(vectors, vectors, pids, pids)] == [expected, expected]


@pytest.mark.parametrize("make", ["dyadic", "gaussian"])
def test_one_pass_recounts_queries_whose_positive_scores_disagree(make, monkeypatch):
    # step 1 scores one ulp low for a random half of the pairs: as if another GEMM rounded differently
    rng = np.random.default_rng(5)
    img, txt, ipids, tpids = tied_products(rng, 40, 6, biased=True)
    if make == "gaussian":
        img, txt = gaussian(rng, len(img)), gaussian(rng, len(txt))
    pair_scores = metrics._pair_scores

    def disagreeing(*args):
        s = pair_scores(*args)
        low = torch.from_numpy(rng.random(len(s)) < 0.5)
        return torch.where(low, torch.nextafter(s, torch.tensor(-1.0)), s)

    monkeypatch.setattr(metrics, "_pair_scores", disagreeing)
    with patch.dict(metrics.TILE_BYTES, {"cpu": 4 * 8 * 8}):
        i2t, t2i = retrieval_ranks(img, txt, ipids, tpids, chunk_size=8)
    np.testing.assert_array_equal(i2t, reference_ranks(img, txt, ipids, tpids))
    np.testing.assert_array_equal(t2i, reference_ranks(txt, img, tpids, ipids))


def test_one_pass_ties_at_zero_survive_flush_to_zero():
    # t = 0: "s >= 0" as s > nextafter(0, -inf) needs denormals; with them flushed, recounted instead
    img, txt = np.stack([E[0], E[1], E[2]]), np.stack([E[1], E[2], E[0]])
    ipids, tpids = ["A", "B", "C"], ["B", "A", "C"]  # image A's text scores 0, as does B's (lower)
    if not torch.set_flush_denormal(True):
        pytest.fail("this CPU cannot flush denormals; the test needs one that can")
    try:
        with patch.dict(metrics.TILE_BYTES, {"cpu": 4}):  # 1 x 1 tiles
            i2t, t2i = retrieval_ranks(img, txt, ipids, tpids, chunk_size=1)
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_array_equal(i2t, reference_ranks(img, txt, ipids, tpids))
    np.testing.assert_array_equal(t2i, reference_ranks(txt, img, tpids, ipids))


@given(n=st.integers(1, 60), size=st.integers(1, 70))
def test_tiles_cover_each_index_once_with_full_size_gemms(n, size):
    grid = metrics.TileGrid(n, n, min(size, n), min(size, n))
    spans = grid.spans(0)
    assert [i for _, lo, hi in spans for i in range(lo, hi)] == list(range(n))
    assert all(0 <= start <= lo < hi <= start + grid.rows <= n for start, lo, hi in spans)
