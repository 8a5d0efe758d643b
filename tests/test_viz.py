"""Plot helpers of notebook 05: numbers on hand-made cases, figures with their labels, PNGs on disk."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from eiclip_core import viz  # noqa: E402


def _clusters(n=40, d=16, seed=0):
    """Two well separated clusters of unit vectors, labels 'a' / 'b'."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:2] * 5
    x = np.concatenate([centres[0] + 0.5 * rng.normal(size=(n, d)), centres[1] + 0.5 * rng.normal(size=(n, d))])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.array(["a"] * n + ["b"] * n)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_umap_same_seed_same_coordinates():
    x, _ = _clusters()
    a, b = viz.umap_2d(x, seed=3), viz.umap_2d(x, seed=3)
    assert a.shape == (80, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, viz.umap_2d(x, seed=4))


def test_knn_purity_and_nearest_words():
    x, labels = _clusters()
    assert viz.knn_purity(x, labels, k=5) == 1.0
    mixed = np.array(["a", "b"] * 40)  # labels unrelated to the clusters: about one half
    assert 0.3 < viz.knn_purity(x, mixed, k=5) < 0.7
    with_missing = labels.astype(object)
    with_missing[:39] = None  # one labelled 'a' left: its neighbours are all 'b'
    assert viz.knn_purity(x, with_missing, k=1) == pytest.approx(40 / 41)
    words = ["east", "north", "west"]
    emb = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    near = viz.nearest_words(np.array([[0.9, 0.1], [-0.2, 1.0]], np.float32), emb, words, k=2)
    assert [w for w, _ in near[0]] == ["east", "north"] and [w for w, _ in near[1]] == ["north", "west"]
    assert near[0][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))


def test_gate_attention_and_example_tables():
    gates = np.array([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]])
    table = viz.gate_table(gates, ["brand", "season"])
    assert list(table.index) == ["brand", "season"] and table.loc["brand", "mean"] == pytest.approx(0.8)
    by = viz.gate_by_group(gates, ["brand", "season"], ["tops", "tops", "bags"])
    assert by.loc["tops", "season"] == pytest.approx(0.2) and list(by.index) == ["bags", "tops"]

    attention = {"brand": np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])}
    prior = {"brand": np.array([0.5, 0.3, 0.2])}
    at = viz.attention_table(attention, {"brand": np.array([0, 0, -1])}, prior)
    assert at.loc["brand", "queries"] == 2
    assert at.loc["brand", "top-1 is own value"] == 0.5 and at.loc["brand", "prior top-1 is own value"] == 1.0
    assert at.loc["brand", "weight on own value"] == pytest.approx(0.4)

    ranks = {"clip-ft": np.array([0, 3, 0, 2, 0]), "ei-clip": np.array([1, 0, 0, 0, 0])}
    ex = viz.retrieval_examples(ranks, "clip-ft", "ei-clip", n=5)
    assert ex["counts"] == {"ei-clip right, clip-ft wrong": 2, "clip-ft right, ei-clip wrong": 1}
    assert ex["ei-clip right, clip-ft wrong"] == [1, 3] and ex["clip-ft right, ei-clip wrong"] == [0]
    np.testing.assert_array_equal(viz.top_k(np.array([[1.0, 0.0]]), np.array([[0, 1], [1, 0], [1, 0]]), 2),
                                  [[1, 2]])


def _dictionaries(seed=0):
    rng = np.random.default_rng(seed)
    values = {"brand": ["olive", "arrow", "zorblax", "other"], "fit": ["slim", "relaxed", "other"]}
    d = {t: viz._unit(rng.normal(size=(len(v), 8))) for t, v in values.items()}
    e = {t: viz._unit(x + 0.3 * rng.normal(size=x.shape)) for t, x in d.items()}
    prone = {"brand": np.array([True, True, False, False]), "fit": np.array([False, True, False])}
    counts = {"brand": np.array([5, 9, 7, 1]), "fit": np.array([4, 3, 1])}
    return values, d, e, prone, counts


def test_dictionary_figure_and_tables(tmp_path):
    values, d, e, prone, counts = _dictionaries()
    chosen = viz.highlight_values(values, prone, counts, ["brand", "fit"], n=3)
    assert chosen == [("brand", 1), ("fit", 1), ("brand", 0)]  # prone only, most frequent of each type in turn
    words = list(viz.GENERAL_WORDS[:20])
    word_emb = viz._unit(np.random.default_rng(1).normal(size=(20, 8)))
    nt = viz.neighbour_table(d, e, values, chosen, words, word_emb, k=3)
    assert list(nt["value"]) == ["arrow", "relaxed", "olive"] and nt["before (D_t)"].str.count(",").eq(2).all()
    shift = viz.dictionary_shift(d, e, prone, word_emb)
    assert shift.loc["prone", "n"] == 3 and shift.loc["not prone", "n"] == 2  # "other" rows left out
    assert shift["moved (degrees)"].gt(5).all()
    assert viz.dictionary_shift(d, d, prone, word_emb)["moved (degrees)"].eq(0).all()
    assert viz._degrees(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(45)
    fig = viz.dictionary_figure(d, e, values, prone, chosen, words, word_emb, seed=0)
    ax1, ax2 = fig.axes[:2]
    assert "D_t" in ax1.get_title() and "E_t" in ax2.get_title()
    legend = [t.get_text() for t in ax2.get_legend().get_texts()]
    assert {"brand", "fit", "confounding-prone", "general English words"} <= set(legend)
    assert sum(t.get_text() == "olive" for t in ax1.texts) == 1
    path = viz.save(fig, tmp_path, "dictionaries")
    assert path == tmp_path / "figures" / "dictionaries.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_other_figures_have_their_labels(tmp_path):
    x, labels = _clusters(n=20)
    fig = viz.text_umap_figure({"CLIP-FT": x, "EI-CLIP": x[::-1].copy()},
                               {"brand": labels, "fit": np.array(["slim"] * 30 + [None] * 10)}, seed=0)
    assert [a.get_title() for a in fig.axes] == ["CLIP-FT: coloured by brand", "CLIP-FT: coloured by fit",
                                                 "EI-CLIP: coloured by brand", "EI-CLIP: coloured by fit"]
    gates = np.random.default_rng(0).uniform(size=(30, 3))
    by = viz.gate_by_group(gates, ["brand", "fit", "season"], ["tops"] * 20 + ["bags"] * 10)
    fig = viz.gate_figure(gates, ["brand", "fit", "season"], by)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["brand", "fit", "season"]
    assert len(fig.axes[1].texts) == 6  # one number per (category, type) cell
    ex = {"text": "Olive slim-fit shirt", "type": "brand", "values": ["olive", "arrow", "other"],
          "attention": np.array([0.6, 0.3, 0.1]), "prior": np.array([0.2, 0.5, 0.3]), "own": 0}
    fig = viz.attention_figure([ex, {**ex, "own": 2}], top=2)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["arrow", "olive (own)"]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["other (own)", "olive"]  # own value kept
    assert fig.axes[0].get_title().startswith("own brand: olive\n")
    table = pd.DataFrame({"type": ["brand", "brand"], "model": ["CLIP-FT", "EI-CLIP"], "chance %": [10.0, 10.0],
                          "top-10 before %": [0.0, 10.0], "top-10 after %": [30.0, 50.0]})
    fig = viz.probe_figure(table)
    assert len(fig.axes[0].patches) == 4 and "EI-CLIP, swapped query" in [
        t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    cases = [{"title": "EI-CLIP right", "text": "Olive shirt", "model": m, "top": [0, 1, 2], "positive": 1}
             for m in ("CLIP-FT", "EI-CLIP")]
    fig = viz.retrieval_examples_figure(cases, lambda p: np.full((8, 8, 3), 40 * p, np.uint8), k=3)
    assert len(fig.axes) == 6 and fig.axes[1].spines["top"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("limegreen")
    sweep = pd.DataFrame({"confounding": [0.0, 0.5, 1.0], "mean R CLIP-FT": [10.0, 9.0, 8.0],
                          "mean R EI-CLIP": [10.5, 10.0, 10.0], "gain": [0.5, 1.0, 2.0]})
    fig = viz.sweep_figure(sweep)
    assert [l.get_label() for l in fig.axes[0].get_lines()] == ["CLIP-FT", "EI-CLIP"]
    assert fig.axes[1].get_ylabel() == "EI-CLIP - CLIP-FT (points)"
    assert viz.save(fig, tmp_path, "sweep").exists()


def test_readings_do_not_claim_a_difference_from_noise():
    assert viz._more(0.040, 0.039, ("more", "less", "about as"), tol=0.01) == "about as"
    assert viz._more(0.060, 0.039, ("more", "less", "about as"), tol=0.01) == "more"
    assert viz._more(0.5, 0.5) == "as" and viz._more(0.4, 0.5) == "less"
