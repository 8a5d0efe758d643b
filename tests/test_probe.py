"""The counterfactual probe on a hand-made text encoder and gallery whose answer is known."""
import numpy as np
import pytest

from eiclip_core.analysis.counterfactual_swap import choose_swaps, probe_type, run_probe, swap_value, top_k_share
from eiclip_core.analysis.readings import probe_numbers, read_probe

BRANDS = ["arrow", "olive", "pilot", "other"]


def test_swap_value_replaces_every_mention_and_keeps_the_rest():
    text = "Olive slim-fit shirt. OLIVE shirt in red cotton."
    mentions = [(0, 5, "brand", "olive"), (6, 14, "fit", "slim"), (22, 27, "brand", "olive")]
    assert swap_value(text, mentions, "brand", "arrow") == "Arrow slim-fit shirt. ARROW shirt in red cotton."
    assert swap_value(text, mentions, "fit", "relaxed") == "Olive relaxed-fit shirt. OLIVE shirt in red cotton."
    assert swap_value(text, mentions, "category", "tops") == text  # no mention of the type: unchanged


def _world(n_per_brand=10):
    """30 products, 10 per brand; text and image both say the brand (one-hot on 3 dims)."""
    ids = np.repeat(np.arange(3), n_per_brand)
    texts = [f"{BRANDS[b].title()} shirt number {i}" for i, b in enumerate(ids)]
    mentions = [[(0, len(BRANDS[b]), "brand", BRANDS[b])] for b in ids]
    images = np.eye(3, dtype=np.float32)[ids]
    return ids, texts, mentions, images


def reads_brand(texts):
    """An encoder that reads the brand word: one-hot of the first brand named in the text."""
    return np.stack([np.eye(3, dtype=np.float32)[[b in t.lower() for b in BRANDS[:3]].index(True)] for t in texts])


def blind(texts):
    """An encoder that ignores the text."""
    return np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (len(texts), 1))


def test_choose_swaps_is_seeded_and_changes_the_value():
    ids, _, mentions, _ = _world()
    a = choose_swaps(ids, BRANDS, mentions, "brand", n_queries=12, seed=3)
    assert a == choose_swaps(ids, BRANDS, mentions, "brand", n_queries=12, seed=3)
    assert a != choose_swaps(ids, BRANDS, mentions, "brand", n_queries=12, seed=4)
    assert len(a) == 12 and len({q for q, _, _ in a}) == 12
    assert all(old == ids[q] and new != old and BRANDS[new] != "other" for q, old, new in a)
    assert choose_swaps(ids, BRANDS, [[] for _ in ids], "brand", 5) == []  # nothing mentioned: no query


def test_top_k_share_counts_ties_by_index():
    gallery_values = np.array([0, 1, 1, 0])
    images = np.ones((4, 2), np.float32)  # all tied: top-2 = items 0 and 1
    share = top_k_share(np.ones((1, 2), np.float32), images, gallery_values, np.array([1]), k=2)
    assert share.tolist() == [0.5]


def test_probe_moves_a_reading_encoder_fully_and_a_blind_one_not_at_all():
    ids, texts, mentions, images = _world()
    df = probe_type(reads_brand, images, texts, mentions, ids, BRANDS, "brand", n_queries=9, k=10)
    assert len(df) == 9
    assert (df["before"] == 0).all() and (df["after"] == 1).all()  # exactly the 10 products of the new brand
    assert all(row.new.title() in row.swapped for row in df.itertuples())

    summary, details = run_probe({"blind": (blind, images, None), "reads": (reads_brand, images, reads_brand(texts))}, texts, mentions,
                                 {"brand": ids}, {"brand": BRANDS}, types=("brand", "fit"), n_queries=9)
    s = summary.set_index("model")
    assert list(summary["type"]) == ["brand", "brand"]  # no fit ids: type skipped
    assert s.loc["reads", "shift_points"] == pytest.approx(100) and s.loc["reads", "queries_moved_pct"] == 100
    assert s.loc["blind", "shift_points"] == pytest.approx(0) and s.loc["blind", "queries_moved_pct"] == 0
    assert s.loc["reads", "chance_pct"] == pytest.approx(100 / 3)
    assert s.loc["reads", "top_k_before_pct"] == 0 and s.loc["reads", "top_k_after_pct"] == 100
    assert details[("brand", "reads")]["query"].tolist() == details[("brand", "blind")]["query"].tolist()
    sentence = read_probe(probe_numbers(summary, "blind", "reads"))
    assert "100.0 % of reads's top-10" in sentence and "more than blind (0.0 %)" in sentence
