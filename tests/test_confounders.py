"""Notebook 05's sections (eiclip_core.confounders) on hand-made runs whose disagreements are known."""
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from eiclip_core import confounders, readings  # noqa: E402
from eiclip_core.analysed_runs import AnalysedRuns  # noqa: E402
from eiclip_core.evaluate import Embeddings  # noqa: E402


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
    runs = _runs({"CLIP-FT": {0, 1, 5}, "EI-CLIP": {2, 3, 4, 5}})
    ex = confounders.section_examples(runs, tmp_path, n=2, k=3, seed=0)
    assert ex["counts"] == {"EI-CLIP right, CLIP-FT wrong": 3, "CLIP-FT right, EI-CLIP wrong": 2}
    assert ex["numbers"]["second_only"] == 3 and ex["numbers"]["first_only"] == 2
    assert ex["reading"] == readings.read_examples(ex["numbers"])
    assert "for 3, and CLIP-FT where EI-CLIP does not for 2: neither model wins" in ex["reading"]
    assert ex["figure"] == tmp_path / "figures" / "05_examples.png"
    assert_whole_png(ex["figure"])


def test_examples_section_without_disagreement_draws_nothing(tmp_path):
    runs = _runs({"CLIP-FT": {0, 1}, "EI-CLIP": {0, 1}})
    ex = confounders.section_examples(runs, tmp_path)
    assert ex["figure"] is None and not (tmp_path / "figures" / "05_examples.png").exists()
    assert ex["reading"].startswith("of 6 text queries") and "sign test p = 1.00" in ex["reading"]
