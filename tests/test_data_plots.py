"""Notebook 01's helpers (eiclip_core.plots_data) on generated data, with and without ground truth."""
import json

import pytest

from eiclip_core import plots_data
from eiclip_core.data import FashionGen
from eiclip_core.errors import KitError
from eiclip_core.synth.world import BRAND_ORDINARY


def test_split_files_generated_and_missing(smoke_data, tmp_path):
    assert plots_data.split_files(smoke_data["train"].parent) == {"train": smoke_data["train"],
                                                                  "validation": smoke_data["validation"]}
    with pytest.raises(KitError, match="no train.h5"):
        plots_data.split_files(tmp_path)


def test_summary_and_ordinary_words(smoke_data):
    splits = {s: FashionGen(smoke_data[s]) for s in ("train", "validation")}
    table = plots_data.split_summary(splits)
    assert table.loc["train", "products"] == 256 and table.loc["train", "images"] == splits["train"].n_rows
    gt = json.loads(smoke_data["ground_truth"].read_text())
    products = splits["train"].products
    assert plots_data.ordinary_word_values(products, gt)["brand"] == gt["ordinary_word_values"]["brand"]
    # without ground truth: whole words of the text tower's vocabulary; made-up brands never qualify
    simple = plots_data.ordinary_word_values(products, vocabulary={"olive", "navy", "tops", "arrow"})
    brands = {b.lower() for b in products.brand}
    assert set(simple["brand"]) == brands & {"olive", "navy", "arrow"}
    found = plots_data.ordinary_word_values(products)
    made_up = {b for b in brands if b.capitalize() not in BRAND_ORDINARY}
    assert not set(found["brand"]) & made_up
    share = plots_data.ordinary_share_table(products, gt["ordinary_word_values"])
    assert 0 < share.loc["brand", "products with one (%)"] <= 100
    rates = plots_data.mention_rates(gt)
    # names always carry the garment noun (as real titles do); every other type is sometimes left out
    assert (rates.loc["subcategory"] == 100).all()
    others = rates.drop(index="subcategory")
    assert ((others > 0) & (others < 100)).all().all()


def test_figures_are_saved(smoke_data, tmp_path):
    ds = FashionGen(smoke_data["validation"])
    path = plots_data.save_figure(plots_data.distributions_figure(ds.products, ds.n_views, "validation"),
                                  tmp_path / "figures" / "d.png")
    fig, shown = plots_data.example_grid(ds, n_products=3, seed=1)
    again = plots_data.example_grid(ds, n_products=3, seed=1)[1]
    assert path.stat().st_size > 10_000 and list(shown) == list(again) and len(shown) == 3
    plots_data.save_figure(fig, tmp_path / "figures" / "e.png")
