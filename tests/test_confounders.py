"""Notebook 05's sections (eiclip_core.analysis.sections) on hand-made runs whose disagreements are known, and on
an imported catalog without brands or without mentions to swap (each section says what it leaves out)."""
import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from eiclip_core.analysis import readings, sections  # noqa: E402
from eiclip_core.analysis.runs import AnalysedRuns  # noqa: E402
from eiclip_core.evaluation.embeddings import Embeddings  # noqa: E402
from eiclip_core.protocols import BASELINE, METHOD, ZERO_SHOT  # noqa: E402


def _runs(right: dict, n: int = 6) -> AnalysedRuns:
    """n products with one view each; model m ranks product q's image first for q in right[m] and the
    next product's image first otherwise."""
    def embeddings(correct):
        text = np.eye(n, dtype=np.float32)[[q if q in correct else (q + 1) % n for q in range(n)]]
        return Embeddings(image=np.eye(n, dtype=np.float32), image_product=np.arange(n), first_view=np.arange(n),
                          text=text)

    data = SimpleNamespace(products=pd.DataFrame({"product_id": np.arange(100, 100 + n),
                                                  "text": [f"product {q}" for q in range(n)]}),
                           first_row=np.arange(n), image=lambda row: np.full((8, 8, 3), 30 * row, np.uint8))
    return AnalysedRuns(data=data, artifact=None, models=dict.fromkeys(right), tokenizer=None, frozen=None,
                        embeddings={m: embeddings(c) for m, c in right.items()}, device="cpu")


def test_examples_section_finds_both_kinds_of_disagreement(tmp_path, assert_whole_png):
    runs = _runs({BASELINE: {0, 1, 5}, METHOD: {2, 3, 4, 5}})
    ex = sections.section_examples(runs, tmp_path, n=2, k=3, seed=0)
    method_right, baseline_right = ex["disagreements"]
    assert (method_right.right, method_right.count, baseline_right.right, baseline_right.count) == (
        METHOD, 3, BASELINE, 2)
    assert ex["numbers"]["second_only"] == 3 and ex["numbers"]["first_only"] == 2
    assert ex["reading"] == readings.read_examples(ex["numbers"])
    assert "for 3, and CLIP-FT where EI-CLIP does not for 2: neither model wins" in ex["reading"]
    assert ex["figure"] == tmp_path / "figures" / "05_examples.png"
    assert_whole_png(ex["figure"])


def test_examples_figure_names_the_models_by_their_labels(tmp_path, monkeypatch):
    drawn = []

    def figure(cases, image, title):
        drawn.extend(case["label"] for case in cases)
        return matplotlib.pyplot.figure()

    monkeypatch.setattr(sections, "retrieval_examples_figure", figure)
    sections.section_examples(_runs({BASELINE: {0, 1, 5}, METHOD: {2, 3, 4, 5}}), tmp_path, n=1, k=3, seed=0)
    assert drawn == ["EI-CLIP right, CLIP-FT wrong\nCLIP-FT", "EI-CLIP right, CLIP-FT wrong\nEI-CLIP",
                     "CLIP-FT right, EI-CLIP wrong\nCLIP-FT", "CLIP-FT right, EI-CLIP wrong\nEI-CLIP"]


def test_examples_section_without_disagreement_draws_nothing(tmp_path):
    runs = _runs({BASELINE: {0, 1}, METHOD: {0, 1}})
    ex = sections.section_examples(runs, tmp_path)
    assert ex["figure"] is None and not (tmp_path / "figures" / "05_examples.png").exists()
    assert ex["reading"].startswith("of 6 text queries") and "sign test p = 1.00" in ex["reading"]


# ------------------------------------------------------------- an imported catalog without brands

def _catalog_runs(brands=(), mentioned=("subcategory",), n: int = 6) -> AnalysedRuns:
    """Runs on n products of an imported catalog: categories tops / bottoms, subcategories shirt / trousers,
    brands `brands` in turn (none: the catalog maps no brand, every product in no value), no fit; texts name
    only the types in `mentioned`. Models are never called: every section below must stop before encoding."""
    kinds = [("tops", "shirt"), ("bottoms", "trousers")]
    texts = [f"Model {q} {kinds[q % 2][1]}" for q in range(n)]
    values = {"brand": [*brands, "other"], "category": ["tops", "bottoms", "other"],
              "subcategory": ["shirt", "trousers", "other"], "fit": ["other"]}
    ids = {"brand": np.array([q % len(brands) if brands else -1 for q in range(n)]),
           "category": np.arange(n) % 2, "subcategory": np.arange(n) % 2, "fit": np.full(n, -1)}
    said = {"brand": lambda q: values["brand"][ids["brand"][q]], "category": lambda q: kinds[q % 2][0],
            "subcategory": lambda q: kinds[q % 2][1]}
    mentions = [[(texts[q].find(said[t](q)), texts[q].find(said[t](q)) + len(said[t](q)), t, said[t](q))
                 for t in mentioned if said[t](q) in texts[q]] for q in range(n)]
    artifact = SimpleNamespace(all_types=list(values), types=list(values), values=values,
                               value_ids=lambda split: ids, mentions=lambda split: mentions,
                               prior={t: np.full(len(v), 1 / len(v)) for t, v in values.items()},
                               prone={t: np.zeros(len(v), bool) for t, v in values.items()})
    runs = _runs({BASELINE: {0, 1}, METHOD: {0, 2}}, n)
    runs.artifact, runs.data.products["text"] = artifact, texts
    return runs


def test_text_features_leave_out_a_type_the_catalog_has_no_value_of(tmp_path, monkeypatch):
    drawn = {}

    def figure(features, labels, seed):
        drawn.update(labels)
        return matplotlib.pyplot.figure()

    monkeypatch.setattr(sections, "text_umap_figure", figure)
    feat = sections.section_text_features(_catalog_runs(), tmp_path)
    assert list(drawn) == ["category"] and list(feat["purity"].index) == ["category"]  # no brand, no fit
    assert feat["numbers"]["not_shown"] == ["brand", "fit"]
    first_line = "brand: not shown, no validation product of this catalog has a brand value."
    assert feat["reading"].splitlines()[0] == first_line
    assert feat["reading"] == readings.read_text_features(feat["numbers"])
    nothing = sections.section_text_features(_catalog_runs(), tmp_path / "none", types=("brand", "fit"))
    assert nothing["figure"] is None and not (tmp_path / "none").exists() and len(nothing["reading"].splitlines()) == 2


def test_attention_without_brands_draws_no_figure_and_says_why(tmp_path):
    runs = _catalog_runs()
    attention = {"brand": np.ones((6, 1)), "category": np.tile([0.6, 0.3, 0.1], (6, 1)), "fit": np.ones((6, 1))}
    att = sections.section_attention(runs, tmp_path, attention, entity_type="brand")
    assert att["figure"] is None and not (tmp_path / "figures").exists()
    assert list(att["table"].index) == ["category"]  # brand and fit: no validation product has a value
    lines = att["reading"].splitlines()
    assert lines[0] == "figure not shown: no validation product of this catalog has a brand value."
    assert lines[1].startswith("category: the attention's top value is the query's own value for 50.0 % of 6 queries")
    assert att["reading"] == readings.read_attention(att["numbers"])
    empty = sections.section_attention(runs, tmp_path, {"brand": np.ones((6, 1))}, entity_type="brand")
    assert empty["table"].empty and empty["reading"] == lines[0]


@pytest.mark.parametrize("brands", [(), ("arrow", "olive")])  # no brand mapped; brands the texts never name
def test_probe_with_nothing_to_swap_draws_no_figure_and_says_why(tmp_path, brands):
    pr = sections.section_probe(_catalog_runs(brands), tmp_path)
    assert pr["figure"] is None and pr["table"].empty and pr["examples"].empty
    assert pr["reading"] == ("not shown: no validation text mentions a brand or fit or category value that could "
                             "be swapped for another value of its type (a catalog that maps none, or whose texts "
                             "never name them).")
    assert pr["reading"] == readings.read_probe(pr["numbers"])
    path = readings.write_readings(tmp_path, {"probe": pr})
    assert json.loads(path.read_text())["probe"]["numbers"]["rows"] == []


# ------------------------------------------------------------- which dictionary values the map names


def _dictionary_runs(values: dict, counts: dict, prone: dict):
    """Just what section_dictionaries reads to choose the values it names: the model's types, the artifact."""
    return SimpleNamespace(models={METHOD: SimpleNamespace(types=list(values))},
                           artifact=SimpleNamespace(values=values, counts=counts,
                                                    prone={t: np.asarray(p, bool) for t, p in prone.items()}))


def test_dictionary_map_names_one_value_per_collision_kind_else_frequent_prone_ones():
    values = {"brand": ["zorblax", "arrow", "navy", "olive", "other"], "fit": ["slim", "relaxed", "other"]}
    counts = {"brand": np.array([50, 9, 3, 7, 0]), "fit": np.array([8, 2, 0])}
    prone = {"brand": [1, 1, 1, 1, 0], "fit": [1, 0, 0]}
    named = sections._labelled_values(_dictionary_runs(values, counts, prone), n_values=6)
    # olive (7) over navy (3); zorblax and slim are the most frequent values but collide with nothing
    assert named == [("colour-word brands", "brand", 3), ("plain-noun brands", "brand", 1), ("fit words", "fit", 1)]
    plain = {"brand": ["zorblax", "vaiza", "other"], "fit": ["slim", "other"]}
    counts = {"brand": np.array([2, 5, 0]), "fit": np.array([3, 0])}
    named = sections._labelled_values(_dictionary_runs(plain, counts, {"brand": [1, 1, 0], "fit": [1, 0]}), 6)
    assert named == [("", "brand", 1), ("", "fit", 0), ("", "brand", 0)]  # no collision: most frequent prone


# ------------------------------------------------------------- the tables as the notebook shows them


def test_shown_tables_carry_the_labels_the_notebook_shows():
    probe = pd.DataFrame({"type": ["brand"], "model": [METHOD], "queries": [3], "chance_pct": [1.0],
                          "top_k_before_pct": [2.0], "top_k_after_pct": [3.0], "shift_points": [1.0],
                          "queries_moved_pct": [50.0]})
    assert list(sections.shown(probe, k=5).columns) == ["type", "model", "queries", "chance %", "top-5 before %",
                                                         "top-5 after %", "shift (points)", "queries moved %"]
    assert sections.shown(probe)["model"].tolist() == ["EI-CLIP"] and "top-10 after %" in sections.shown(probe)
    assert probe["model"].tolist() == [METHOD] and "chance_pct" in probe  # the table itself keeps its fields
    purity = pd.DataFrame({BASELINE: [0.1], METHOD: [0.2]}, index=["brand"])
    assert list(sections.shown(purity).columns) == ["CLIP-FT", "EI-CLIP"]
    recall = pd.DataFrame({"confounding": 0.0, "row": [ZERO_SHOT, BASELINE, METHOD], "mean_recall": 1.0})
    assert sections.shown(recall)["row"].tolist() == ["CLIP zero-shot", "CLIP-FT", "EI-CLIP"]
    assert list(sections.shown(recall).columns) == ["confounding", "row", "mean R"]
    gain = pd.DataFrame({"confounding": [0.0], "gain": [1.0], "method_wins": [2], "baseline_wins": [1]})
    assert list(sections.shown(gain).columns) == ["confounding", "gain", "EI-CLIP wins", "CLIP-FT wins"]
    shift = pd.DataFrame({"n": [3], "moved_degrees": [4.0], "nearest_word_cos_before": [0.5]},
                         index=pd.Index(["prone"], name="values"))
    shown = sections.shown(shift)
    assert list(shown.columns) == ["n", "moved (degrees)", "nearest word cos before"] and shown.index.name == "values"
