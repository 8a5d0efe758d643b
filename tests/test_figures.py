"""Figures (eiclip_core.figures): each carries its labels, and `save_figure` writes whole PNGs atomically."""
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from eiclip_core import figures  # noqa: E402
from eiclip_core.analysis.measures import GENERAL_WORDS, WORD_GROUP, unit_rows  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _square(colour: str, inches: float = 1.0):
    fig, ax = plt.subplots(figsize=(inches, inches))
    ax.set_facecolor(colour)
    return fig


def test_save_figure_writes_a_whole_png_and_replaces_atomically(tmp_path, assert_whole_png):
    path = figures.save_figure(_square("red"), tmp_path, "a")
    assert path == tmp_path / "figures" / "a.png"
    assert_whole_png(path)
    again = figures.save_figure(_square("red"), tmp_path, "b")
    assert again.read_bytes() == path.read_bytes()  # same figure, same bytes (no timestamp or software tag)

    bigger = _square("blue", inches=3)
    figures.save_figure(bigger, tmp_path, "a")  # an existing figure is replaced whole by the new one
    assert path.read_bytes() == figures.save_figure(bigger, tmp_path, "c").read_bytes() != again.read_bytes()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["a.png", "b.png", "c.png"]  # no temporaries

    before = path.read_bytes()
    broken = _square("green")

    def fail_half_way(fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(before[:100])  # half a PNG, then the draw fails
        raise RuntimeError("draw failed")

    broken.savefig = fail_half_way
    with pytest.raises(RuntimeError, match="draw failed"):
        figures.save_figure(broken, tmp_path, "a")
    assert path.read_bytes() == before  # the previous figure stays, whole
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["a.png", "b.png", "c.png"]


def test_save_figure_closes_the_figure(tmp_path):
    fig = _square("red")
    assert plt.fignum_exists(fig.number)
    figures.save_figure(fig, tmp_path, "closed")
    assert not plt.fignum_exists(fig.number)


def test_umap_same_seed_same_coordinates():
    x = unit_rows(np.random.default_rng(0).normal(size=(60, 8))).astype(np.float32)
    a, b = figures.umap_2d(x, seed=3), figures.umap_2d(x, seed=3)
    assert a.shape == (60, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, figures.umap_2d(x, seed=4))


@pytest.mark.slow  # UMAP again in a new process
def test_umap_kernels_are_cached_on_disk_and_a_new_process_draws_the_same_map(tmp_path):
    """umap-learn's numba kernels are compiled once per environment, not once per process: after a fit
    their machine code is in numba's cache, and a fresh process (which loads it) draws the same map."""
    import umap.umap_

    x = unit_rows(np.random.default_rng(0).normal(size=(60, 8))).astype(np.float32)
    here = figures.umap_2d(x, seed=3)
    cache = Path(umap.umap_.smooth_knn_dist._cache.cache_path)
    assert list(cache.glob("*smooth_knn_dist-*.nbi")) and list(cache.glob("*smooth_knn_dist-*.nbc"))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np; from eiclip_core.figures import umap_2d; "
            "np.save(sys.argv[1], umap_2d(np.load(sys.argv[2]), seed=3))")
    subprocess.run([sys.executable, "-c", code, tmp_path / "there.npy", tmp_path / "x.npy"], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "there.npy"), here)


def test_umap_keeps_clusters_apart():
    """The map is drawn from the points' neighbours: two directions far apart stay two groups."""
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2] * 5
    x = unit_rows(np.concatenate([c + rng.normal(size=(30, 8)) * 0.3 for c in centres])).astype(np.float32)
    xy = figures.umap_2d(x, seed=0, n_neighbors=10)
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(60) * 1e9
    group = np.repeat([0, 1], 30)
    assert (group[gaps.argmin(axis=1)] == group).all()


def test_dictionary_figure_has_its_labels(tmp_path, assert_whole_png):
    rng = np.random.default_rng(0)
    values = {"brand": ["olive", "arrow", "zorblax", "other"], "fit": ["slim", "relaxed", "other"]}
    d = {t: unit_rows(rng.normal(size=(len(v), 8))) for t, v in values.items()}
    e = {t: unit_rows(x + 0.3 * rng.normal(size=x.shape)) for t, x in d.items()}
    prone = {"brand": np.array([True, True, False, False]), "fit": np.array([False, True, False])}
    words = list(GENERAL_WORDS[:20])
    word_emb = unit_rows(rng.normal(size=(20, 8)))
    groups = [WORD_GROUP[w] for w in words]
    fig = figures.dictionary_figure(d, e, values, prone, [("brand", 1), ("fit", 1), ("brand", 0)], words, word_emb,
                                    groups)
    ax1, ax2 = fig.axes[:2]
    assert "D_t" in ax1.get_title() and "E_t" in ax2.get_title()
    legend = [t.get_text() for t in ax2.get_legend().get_texts()]
    assert {"brand", "fit", "confounding-prone"} <= set(legend) and not set(groups) & set(legend)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(dict.fromkeys(groups))
    assert sum(t.get_text() == "olive" for t in ax1.texts) == 1
    assert {t.get_text() for t in ax2.texts} >= set(words)  # every general word named
    fills = {c.get_label(): tuple(c.get_facecolor()[0]) for c in ax1.collections if c.get_label() in groups}
    assert len(set(fills.values())) == len(set(groups))  # one colour per group
    assert_whole_png(figures.save_figure(fig, tmp_path, "dictionaries"))


def test_notebook_05_figures_have_their_labels():
    x = unit_rows(np.random.default_rng(0).normal(size=(40, 8))).astype(np.float32)
    fig = figures.text_umap_figure({"clip-ft": x, "ei-clip": x[::-1].copy()},
                                   {"brand": np.array(["a", "b"] * 20), "fit": np.array(["slim"] * 30 + [None] * 10)})
    assert [a.get_title() for a in fig.axes] == ["CLIP-FT: coloured by brand", "CLIP-FT: coloured by fit",
                                                 "EI-CLIP: coloured by brand", "EI-CLIP: coloured by fit"]
    gates = np.random.default_rng(0).uniform(size=(30, 3))
    by = pd.DataFrame([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5]], index=["bags", "tops"], columns=["brand", "fit", "season"])
    fig = figures.gate_figure(gates, ["brand", "fit", "season"], by)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["brand", "fit", "season"]
    assert len(fig.axes[1].texts) == 6  # one number per (category, type) cell
    ex = {"text": "Olive slim-fit shirt", "type": "brand", "values": ["olive", "arrow", "other"],
          "attention": np.array([0.6, 0.3, 0.1]), "prior": np.array([0.2, 0.5, 0.3]), "own": 0}
    fig = figures.attention_figure([ex, {**ex, "own": 2}], top=2)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["arrow", "olive (own)"]
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["other (own)", "olive"]  # own value kept
    assert fig.axes[0].get_title().startswith("own brand: olive\n")
    table = pd.DataFrame({"type": ["brand", "brand"], "model": ["clip-ft", "ei-clip"], "chance_pct": [10.0, 10.0],
                          "top_k_before_pct": [0.0, 10.0], "top_k_after_pct": [30.0, 50.0]})
    fig = figures.probe_figure(table, k=5)
    assert len(fig.axes[0].patches) == 4 and "EI-CLIP, swapped query" in [
        t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert fig.axes[0].get_ylabel() == "% of top-5 with the new value"
    recall = pd.DataFrame({"confounding": [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
                           "row": ["zero-shot", "clip-ft", "ei-clip"] * 2,
                           "mean_recall": [5.0, 10.0, 10.5, 3.0, 8.0, 10.0], "std": [0.2, 0.5, 0.4, 0.3, np.nan, 0.6]})
    gain = pd.DataFrame({"confounding": [0.0, 1.0], "gain": [0.5, 2.0], "std": [0.3, 0.4]})
    fig = figures.sweep_figure(recall, gain)
    assert fig.axes[0].get_legend_handles_labels()[1] == ["CLIP zero-shot", "CLIP-FT", "EI-CLIP"]
    assert fig.axes[1].get_ylabel() == "EI-CLIP - CLIP-FT (points)"
    gain_bars = fig.axes[1].containers[0]  # errorbar container: line, caps, bar segments
    assert gain_bars.lines[0].get_ydata().tolist() == [0.5, 2.0]
    assert [seg[:, 1].tolist() for seg in gain_bars.lines[2][0].get_segments()] == [[0.2, 0.8], [1.6, 2.4]]


def test_retrieval_examples_figure_frames_the_positive():
    cases = [{"query": 1, "text": "Olive shirt", "top": [0, 1, 2], "rank": 1, "label": "EI-CLIP"},
             {"query": 4, "text": "Navy coat", "top": [0, 1, 2], "rank": 7}]
    fig = figures.retrieval_examples_figure(cases, lambda p: np.full((8, 8, 3), 40 * p, np.uint8), title="t")
    axes = np.array(fig.axes).reshape(2, 5)  # text, top 3, the positive
    green = matplotlib.colors.to_rgb("limegreen")
    assert [tuple(ax.spines["top"].get_edgecolor()[:3]) == green for ax in axes[0, 1:4]] == [False, True, False]
    assert not any(tuple(ax.spines["top"].get_edgecolor()[:3]) == green for ax in axes[1, 1:4])
    assert axes[0, 2].get_title() == "#2 (positive)" and axes[1, -1].get_title() == "positive: rank 8"
    assert axes[0, 0].texts[0].get_text().startswith("EI-CLIP\n") and axes[1, 0].texts[0].get_text() == "Navy coat"


def test_training_and_recall_figures():
    logs = pd.DataFrame({"row": ["clip-ft"] * 3 + ["ei-clip"] * 3, "seed": 0, "step": [1, 2, 3] * 2,
                         "loss": 1.0, "loss_itc": 0.5, "loss_ent": 0.5, "samples_per_s": 10.0})
    fig = figures.loss_curves_figure(logs)
    assert [ax.get_title() for ax in fig.axes] == ["total loss", "L_itc", "L_ent (EALM rows)"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["clip-ft seed0", "ei-clip seed0"]
    assert figures.throughput_figure(logs).axes[0].get_ylabel() == "samples / s"
    columns = [f"{k}{s}" for k in ("i2t_r1", "t2i_r1") for s in ("", "_lo", "_hi")]
    summary = pd.DataFrame({"row": ["CLIP-FT", "EI-CLIP", "FashionBERT (published)"], "protocol": "full",
                            **{c: [10.0, 12.0, 20.0] for c in columns}})
    fig = figures.recall_figure(summary, ["i2t_r1", "t2i_r1"])
    assert [ax.get_title() for ax in fig.axes] == ["i2t_r1", "t2i_r1"]
    assert len(fig.axes[0].patches) == 2  # ours only: the published row is left out


DOLLARS = "Was $25 - our #1 - now $19"  # two "$": mathtext would read "25 - our #1 - now " as a formula
SHORT = "$5 #1 $9"  # an entity value short enough to be drawn whole where labels are shortened


def _drawn_texts(fig, tmp_path, name):
    """Every text of `fig` once drawn (tick labels exist only then), after saving it as a PNG."""
    figures.save_figure(fig, tmp_path, name)
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _shows_dollars_as_text(texts, wanted: str = DOLLARS) -> bool:
    """Some text shows `wanted`, and no text holding a "$" is mathtext (an escaped dollar is drawn as "$")."""
    with_dollars = [t for t in texts if "$" in t]
    return (any(wanted in t.replace(r"\$", "$").replace("\n", " ") for t in with_dollars)
            and not any(matplotlib.cbook.is_math_text(t) for t in with_dollars))


def test_catalog_text_with_dollars_is_drawn_as_text_not_mathtext(tmp_path):
    """A catalog's names, descriptions and entity values are drawn as they are written: two "$" never start
    matplotlib's mathtext (which fails on "#", so notebook 01 failed on such a catalog)."""
    columns = ["brand", "category", "subcategory", "season", "composition", "gender", "department"]
    products = pd.DataFrame({**{c: [SHORT, "tops"] for c in columns}, "text": [DOLLARS, "a shirt"],
                             "rows": [range(0, 1), range(1, 2)]})
    ds = type("Split", (), {"products": products, "image": lambda self, row: np.zeros((4, 4, 3), np.uint8),
                            "__len__": lambda self: 2})()
    assert _shows_dollars_as_text(_drawn_texts(figures.example_grid(ds, n_products=2)[0], tmp_path, "grid"))
    assert _shows_dollars_as_text(_drawn_texts(figures.distributions_figure(products, [1, 1], "train"), tmp_path,
                                               "distributions"), SHORT)
    art = type("Artifact", (), {"types": ["brand"], "values": {"brand": [DOLLARS, "other"]},
                                "prone": {"brand": [True, False]}, "prior": {"brand": np.array([0.5, 0.5])}})()
    assert _shows_dollars_as_text(_drawn_texts(figures.priors_figure(art), tmp_path, "priors"))
    cases = [{"query": 0, "text": DOLLARS, "top": [0, 1], "rank": 0, "label": "EI-CLIP"}]
    fig = figures.retrieval_examples_figure(cases, lambda p: np.zeros((4, 4, 3), np.uint8))
    assert _shows_dollars_as_text(_drawn_texts(fig, tmp_path, "retrieval"))
    ex = {"text": DOLLARS, "type": "brand", "values": [DOLLARS, "other"], "attention": np.array([0.6, 0.4]),
          "prior": np.array([0.5, 0.5]), "own": 0}
    assert _shows_dollars_as_text(_drawn_texts(figures.attention_figure([ex]), tmp_path, "attention"))
    by = pd.DataFrame([[0.2], [0.5]], index=[SHORT, "tops"], columns=["brand"])
    fig = figures.gate_figure(np.full((4, 1), 0.5), ["brand"], by)
    assert _shows_dollars_as_text(_drawn_texts(fig, tmp_path, "gates"), SHORT)
    x = unit_rows(np.random.default_rng(0).normal(size=(20, 8))).astype(np.float32)
    fig = figures.text_umap_figure({"ei-clip": x}, {"brand": np.array([SHORT, "b"] * 10)})
    assert _shows_dollars_as_text(_drawn_texts(fig, tmp_path, "features"), SHORT)
    values = {"brand": [DOLLARS, "other"]}
    d = {"brand": x[:2]}
    fig = figures.dictionary_figure(d, d, values, {"brand": [True, False]}, [("brand", 0)], ["red", "blue"], x[2:4],
                                    ["colour", "colour"])
    assert _shows_dollars_as_text(_drawn_texts(fig, tmp_path, "dictionaries"))
