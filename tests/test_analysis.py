"""Measures of notebook 05 (eiclip_core.analysis.measures) on hand-made cases whose answer is known."""
import numpy as np
import pytest

from eiclip_core.analysis import measures


def _clusters(n=40, d=16, seed=0):
    """Two well separated clusters of unit vectors, labels 'a' / 'b'."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:2] * 5
    x = np.concatenate([centres[0] + 0.5 * rng.normal(size=(n, d)), centres[1] + 0.5 * rng.normal(size=(n, d))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.array(["a"] * n + ["b"] * n)


def dictionaries(seed=0):
    """Hand-made D_t and E_t (E = D plus noise) of two types, with prone flags and counts."""
    rng = np.random.default_rng(seed)
    values = {"brand": ["olive", "arrow", "zorblax", "other"], "fit": ["slim", "relaxed", "other"]}
    d = {t: measures.unit_rows(rng.normal(size=(len(v), 8))) for t, v in values.items()}
    e = {t: measures.unit_rows(x + 0.3 * rng.normal(size=x.shape)) for t, x in d.items()}
    prone = {"brand": np.array([True, True, False, False]), "fit": np.array([False, True, False])}
    counts = {"brand": np.array([5, 9, 7, 1]), "fit": np.array([4, 3, 1])}
    return values, d, e, prone, counts


def test_knn_purity_and_nearest_words():
    x, labels = _clusters()
    assert measures.knn_purity(x, labels, k=5) == 1.0
    mixed = np.array(["a", "b"] * 40)  # labels unrelated to the clusters: about one half
    assert 0.3 < measures.knn_purity(x, mixed, k=5) < 0.7
    with_missing = labels.astype(object)
    with_missing[:39] = None  # one labelled 'a' left: its neighbours are all 'b'
    assert measures.knn_purity(x, with_missing, k=1) == pytest.approx(40 / 41)
    assert np.isnan(measures.knn_purity(x[:3], [None, "a", None]))
    words = ["east", "north", "west"]
    emb = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    near = measures.nearest_words(np.array([[0.9, 0.1], [-0.2, 1.0]], np.float32), emb, words, k=2)
    assert [w for w, _ in near[0]] == ["east", "north"] and [w for w, _ in near[1]] == ["north", "west"]
    assert near[0][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))


def test_gate_and_attention_tables():
    gates = np.array([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]])
    table = measures.gate_table(gates, ["brand", "season"])
    assert list(table.index) == ["brand", "season"] and table.loc["brand", "mean"] == pytest.approx(0.8)
    by = measures.gate_by_group(gates, ["brand", "season"], ["tops", "tops", "bags"])
    assert by.loc["tops", "season"] == pytest.approx(0.2) and list(by.index) == ["bags", "tops"]

    attention = {"brand": np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])}
    prior = {"brand": np.array([0.5, 0.3, 0.2])}
    at = measures.attention_table(attention, {"brand": np.array([0, 0, -1])}, prior)
    assert at.loc["brand", "queries"] == 2
    assert at.loc["brand", "top1_is_own"] == 0.5 and at.loc["brand", "prior_top1_is_own"] == 1.0
    assert at.loc["brand", "weight_on_own"] == pytest.approx(0.4)
    assert at.loc["brand", "departure_from_prior"] == pytest.approx((0.2 + 0.5) / 2)  # total variation per query
    same = measures.attention_table({"brand": np.tile(prior["brand"], (3, 1))}, {"brand": np.array([0, 1, 2])}, prior)
    assert same.loc["brand", "departure_from_prior"] == 0


def test_disagreements_and_sign_test():
    ranks = {"clip-ft": np.array([0, 3, 0, 2, 0]), "ei-clip": np.array([1, 0, 0, 0, 0])}
    method_right, baseline_right = measures.disagreements(ranks, "clip-ft", "ei-clip", n=5)
    assert method_right == measures.Disagreement(right="ei-clip", wrong="clip-ft", count=2, examples=[1, 3])
    assert baseline_right == measures.Disagreement(right="clip-ft", wrong="ei-clip", count=1, examples=[0])
    assert measures.disagreements(ranks, "clip-ft", "ei-clip", n=1)[0].examples in ([1], [3])  # n drawn of each
    assert measures.sign_test(0, 0) == 1.0
    assert measures.sign_test(10, 0) == pytest.approx(2 * 0.5 ** 10)  # two-sided, all one way
    assert measures.sign_test(6, 4) > 0.5


def test_dictionary_tables_and_rank_test():
    values, d, e, prone, counts = dictionaries()
    chosen = measures.highlight_values(values, prone, counts, ["brand", "fit"], n=3)
    assert chosen == [("brand", 1), ("fit", 1), ("brand", 0)]  # prone only, most frequent of each type in turn
    words = list(measures.GENERAL_WORDS[:20])
    word_emb = measures.unit_rows(np.random.default_rng(1).normal(size=(20, 8)))
    nt = measures.neighbour_table(d, e, values, [("plain-noun brands", *chosen[0]), ("", *chosen[1])], words,
                                  word_emb, k=3)
    assert list(nt["value"]) == ["arrow", "relaxed"] and nt["nearest_words_before"].str.count(",").eq(2).all()
    assert list(nt["collides_with"]) == ["object words", ""]
    assert set(nt["group_before"]) | set(nt["group_after"]) <= set(measures.GENERAL_WORD_GROUPS)
    shift = measures.dictionary_shift(d, e, prone, word_emb)
    assert shift.loc["prone", "n"] == 3 and shift.loc["not prone", "n"] == 2  # "other" rows left out
    assert shift["moved_degrees"].gt(5).all()
    moved = measures.moved_degrees(d, e, prone)
    assert shift.loc["prone", "moved_degrees"] == pytest.approx(moved["prone"].mean())
    assert measures.dictionary_shift(d, d, prone, word_emb)["moved_degrees"].eq(0).all()
    assert measures.angles_degrees(np.array([1.0, 0.0]), np.array([1.0, 1.0]))[0] == pytest.approx(45)
    assert measures.moved_rank_test(measures.moved_degrees(d, d, prone)) == 1.0  # nothing moved: no difference
    apart = {"prone": np.arange(10) + 20.0, "not prone": np.arange(10.0)}
    assert measures.moved_rank_test(apart) < 0.001
    assert measures.moved_rank_test({"prone": np.arange(10.0), "not prone": np.arange(10.0) + 0.5}) > 0.5
    assert measures.moved_rank_test({"prone": np.arange(3.0)}) is None


def test_linear_probe_leaves_out_types_without_two_values():
    """A catalog that maps no brand (every product -1) or has one value of a type cannot be probed: those
    types get no row and unprobed_types says why; a type with two separable values is probed."""
    from eiclip_core.evaluation.linear_probe import probe_table, unprobed_types

    x, labels = _clusters(n=20)
    value_ids = {"brand": np.full(40, -1), "season": np.zeros(40, int), "category": (labels == "b").astype(int)}
    assert unprobed_types(value_ids, value_ids) == {
        "brand": "0 training products with a value, 0 distinct; 0 validation products with a value",
        "season": "40 training products with a value, 1 distinct; 40 validation products with a value"}
    table = probe_table({"CLIP-FT": x}, {"CLIP-FT": x}, value_ids, value_ids)
    assert list(table["type"]) == ["category"] and table.loc[0, "accuracy"] == 100.0


def test_linear_probe_fits_on_one_split_and_scores_the_other():
    """Fitted on one draw of two clusters and scored on another: separable labels are read (100 %),
    labels unrelated to the features are not (near the majority baseline), a value the fit set never
    saw counts as a miss, and missing values (-1) are left out of both sets."""
    from eiclip_core.evaluation.linear_probe import probe_accuracy

    fit_x, fit_labels = _clusters(n=30, seed=0)
    test_x, test_labels = _clusters(n=30, seed=1)
    fit_y, test_y = (fit_labels == "b").astype(int), (test_labels == "b").astype(int)
    assert probe_accuracy(fit_x, fit_y, test_x, test_y) == (1.0, 0.5)
    noise = np.random.default_rng(2).integers(0, 2, 60)
    accuracy, majority = probe_accuracy(fit_x, noise, test_x, np.random.default_rng(3).integers(0, 2, 60))
    assert accuracy < 0.75 and 0.3 < majority < 0.7
    unseen = test_y.copy()
    unseen[:10] = 7  # a value with no fit example: never predicted
    assert probe_accuracy(fit_x, fit_y, test_x, unseen)[0] == 50 / 60
    missing = fit_y.copy()
    missing[30:] = -1  # only cluster "a" has a value left: one class, every test "b" a miss
    assert probe_accuracy(fit_x, missing, test_x, test_y)[0] == 0.5


def test_probe_fit_products_are_a_seeded_sample_never_the_first_rows():
    from eiclip_core.evaluation.linear_probe import fit_products

    assert np.array_equal(fit_products(50, seed=0, limit=100), np.arange(50))
    chosen = fit_products(5000, seed=0, limit=100)
    assert len(np.unique(chosen)) == 100 and np.all(np.diff(chosen) > 0) and chosen.max() > 1000
    assert np.array_equal(chosen, fit_products(5000, seed=0, limit=100))
    assert not np.array_equal(chosen, fit_products(5000, seed=1, limit=100))


# ------------------------------------------------------------------ general words by meaning, collisions


def test_general_words_sit_in_the_group_the_general_corpus_grounds_them_in():
    from eiclip_core.synth import general_corpus as corpus

    groups = measures.GENERAL_WORD_GROUPS
    assert sum(len(w) for w in groups.values()) == len(set(measures.GENERAL_WORDS)) == len(measures.GENERAL_WORDS)
    assert set(measures.COLLIDES_WITH.values()) <= set(groups)
    grounded = {"colour words": corpus.ALL_COLOURS, "material words": (*corpus.MATERIALS, *corpus.BRAND_MATERIALS),
                "garment words": (*corpus.GARMENT_WORDS, *corpus.GROUP_WORDS), "object words": corpus.ICON_WORDS}
    drawn = 0
    for group, corpus_words in grounded.items():
        for word in set(corpus_words) & set(measures.GENERAL_WORDS):
            assert measures.WORD_GROUP[word] == group, word
            drawn += 1
    assert drawn >= 10  # the colours, the materials and "trousers" at least


def test_nearest_groups_is_the_majority_of_the_k_nearest_words_ties_to_the_nearer():
    words = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0.9, 0.1]], np.float32)
    groups = ["a", "a", "b", "b", "b"]
    v = np.array([[0.8, 0.6, 0]])  # cosines: a2 0.86, a1 0.80, b2 0.68, b1 0.60, b3 0.60
    assert [measures.nearest_groups(v, words, groups, k)[0] for k in (1, 3, 4, 5)] == ["a", "a", "a", "b"]
    both = np.array([[0.8, 0.6, 0], [0, 0.2, 1]])  # the second is nearest b3 with any k
    assert measures.nearest_groups(both, words, groups, k=2) == ["a", "b"]


def _generated_values():
    """Values of three types, some ordinary words of the generator's lists, "other" last."""
    return {"brand": ["olive", "arrow", "zorblax", "navy", "denim", "other"], "fit": ["slim", "relaxed", "other"],
            "category": ["tops", "upperwear", "other"]}


def test_collision_kinds_are_the_generators_lists():
    from eiclip_core.synth import world

    kinds = measures.collision_kinds()
    assert set(kinds) == set(measures.COLLIDES_WITH)
    brands = sorted(w for t, words in kinds.values() if t == "brand" for w in words)
    assert brands == sorted(w.lower() for w in world.BRAND_ORDINARY)
    assert kinds["fit words"] == ("fit", set(world.FIT_ORDINARY)) and "olive" in kinds["colour-word brands"][1]
    values = _generated_values()
    assert measures.collision_values(values, ["brand", "fit", "category"]) == {
        "colour-word brands": [0, 3], "material-word brands": [4], "plain-noun brands": [1], "category words": [0],
        "fit words": [1]}
    assert set(measures.collision_values(values, ["brand"])) == {"colour-word brands", "material-word brands",
                                                                 "plain-noun brands"}
    counts = {"brand": np.array([3, 9, 20, 5, 1, 0]), "fit": np.array([4, 2, 0]), "category": np.array([1, 8, 0])}
    picks = measures.collision_picks(values, counts, ["brand", "fit"])
    assert picks == [("colour-word brands", "brand", 3), ("material-word brands", "brand", 4),
                     ("plain-noun brands", "brand", 1), ("fit words", "fit", 1)]  # navy: the more frequent colour


def test_collision_table_counts_values_nearest_their_group_before_and_after():
    words = ["red", "blue", "cotton", "wool", "fuel", "bird"]  # colour, colour, material, material, object, object
    word_emb = np.eye(6, dtype=np.float32)
    values = _generated_values()
    near = lambda *rows: measures.unit_rows(np.array([word_emb[r] + 0.1 for r in rows]))  # noqa: E731
    # olive: red -> red; arrow: bird -> bird; navy: fuel -> blue; denim: bird -> wool; zorblax, other: anything
    d = {"brand": near(0, 5, 2, 4, 5, 3)}
    e = {"brand": near(0, 5, 2, 1, 3, 3)}
    table = measures.collision_table(d, e, values, word_emb, words, k=1).set_index("kind")
    assert list(table.index) == ["colour-word brands", "material-word brands", "plain-noun brands"]
    assert table.loc["colour-word brands", ["values", "nearest_before", "nearest_after"]].tolist() == [2, 1, 2]
    assert table.loc["material-word brands", ["values", "nearest_before", "nearest_after"]].tolist() == [1, 0, 1]
    assert table.loc["plain-noun brands", ["collides_with", "nearest_before", "nearest_after"]].tolist() == [
        "object words", 1, 1]
    assert (table["group_words"] == 2).all() and (table["words"] == 6).all()
    assert measures.collision_table(d, e, {"brand": ["zorblax", "other"]}, word_emb, words).empty
