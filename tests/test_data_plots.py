"""Notebook 01's tables (eiclip_core.data.tables) and figures on generated data, with and without ground truth."""
import json

import pytest

from eiclip_core import layout
from eiclip_core.data import tables
from eiclip_core.data import FashionGen
from eiclip_core.errors import KitError
from eiclip_core.figures import distributions_figure, example_grid, save_figure
from eiclip_core.synth.world import BRAND_ORDINARY


def test_split_file_generated_and_missing(smoke_data, tmp_path):
    data_dir = smoke_data["train"].parent
    assert {s: layout.split_file(data_dir, s) for s in layout.SPLITS} == {"train": smoke_data["train"],
                                                                          "validation": smoke_data["validation"]}
    with pytest.raises(KitError, match="no train file .*eiclip synth --out .*fashiongen_256_256_train.h5"):
        layout.split_file(tmp_path, "train")


def test_summary_and_ordinary_words(smoke_data):
    splits = {s: FashionGen(smoke_data[s]) for s in ("train", "validation")}
    table = tables.split_summary(splits)
    assert table.loc["train", "products"] == 256 and table.loc["train", "images"] == splits["train"].n_rows
    gt = json.loads(smoke_data["ground_truth"].read_text())
    products = splits["train"].products
    assert tables.ordinary_word_values(products, gt)["brand"] == gt["ordinary_word_values"]["brand"]
    # without ground truth: whole words of the text tower's vocabulary; made-up brands never qualify
    simple = tables.ordinary_word_values(products, vocabulary={"olive", "navy", "tops", "arrow"})
    brands = {b.lower() for b in products.brand}
    assert set(simple["brand"]) == brands & {"olive", "navy", "arrow"}
    found = tables.ordinary_word_values(products)
    made_up = {b for b in brands if b.capitalize() not in BRAND_ORDINARY}
    assert not set(found["brand"]) & made_up
    share = tables.ordinary_share_table(products, gt["ordinary_word_values"])
    assert 0 < share.loc["brand", "products with one (%)"] <= 100
    rates = tables.mention_rates(gt)
    # names always carry the garment noun (as real titles do); every other type is sometimes left out
    assert (rates.loc["subcategory"] == 100).all()
    others = rates.drop(index="subcategory")
    assert ((others > 0) & (others < 100)).all().all()


def test_figures_are_saved(smoke_data, tmp_path, assert_whole_png):
    """Every figure of notebook 01 is written whole, as its own PNG, and nothing else is left behind."""
    splits = {s: FashionGen(smoke_data[s]) for s in ("train", "validation")}
    paths = [save_figure(distributions_figure(ds.products, ds.n_views, s), tmp_path, f"01_distributions_{s}")
             for s, ds in splits.items()]
    fig, shown = example_grid(splits["validation"], n_products=3, seed=1)
    assert list(shown) == list(example_grid(splits["validation"], n_products=3, seed=1)[1]) and len(shown) == 3
    paths.append(save_figure(fig, tmp_path, "01_examples"))
    for path in paths:
        assert_whole_png(path)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)
    assert len({p.read_bytes() for p in paths}) == 3  # three different figures
    # saving over an existing figure replaces it whole: the file is exactly the new figure
    again = example_grid(splits["validation"], n_products=2, seed=2)[0]
    fresh = save_figure(again, tmp_path / "fresh", "01_examples").read_bytes()
    assert save_figure(again, tmp_path, "01_examples").read_bytes() == fresh
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)


def test_harm_and_brand_swap_say_why_they_are_not_measured(smoke_data, tmp_path):
    """Notebook 01's confounder measures need generated products; on an imported catalog each prints why not."""
    from eiclip_core.analysis import harm
    from eiclip_core.pipeline.profiles import get_profile

    catalog = harm.not_measured(get_profile("catalog"), tmp_path)
    assert catalog == {"harm": "confounding harm not measured: profile catalog has no generator knob (real or "
                               "imported data)",
                       "brand_swap": "brand swap not measured: it needs generated products (their brand mentions) "
                                     "and a knob"}
    smoke = get_profile("smoke")
    assert harm.not_measured(smoke, smoke_data["train"].parent) == {"harm": None, "brand_swap": None}
    without_truth = harm.not_measured(smoke, tmp_path)
    assert without_truth["harm"] is None and without_truth["brand_swap"] == (
        f"brand swap not measured: {tmp_path / 'ground_truth.json'} is missing (the generator's brand mentions)")
