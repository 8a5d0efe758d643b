"""Entity mining on generated data, measured against the generator's ground_truth.json (never
against the miner's own output), and the `eiclip mine` command end to end."""
import numpy as np
import pytest

from eiclip_core.cli import main as eiclip
from eiclip_core.data import FashionGen
from eiclip_core.entities import OTHER, load_artifact, mine_dataset
from eiclip_core.entities.scores import mention_errors, mention_scores, reference_mentions
from eiclip_core.synth import load_ground_truth
from eiclip_core.data.product_text import normalise_value


@pytest.fixture(scope="module")
def mined(smoke_data, tmp_path_factory):
    """(artifact, ground truth) for the smoke data; prone flags from a whitespace tokenizer (fast)."""
    out = tmp_path_factory.mktemp("mined") / "entities.json"
    art = mine_dataset(smoke_data["train"], smoke_data["validation"], out, tokenizer=str.split, progress=False)
    return art, load_ground_truth(smoke_data["ground_truth"])


@pytest.mark.parametrize("split", ["train", "validation"])
def test_precision_and_recall_per_type_against_ground_truth(mined, smoke_data, split):
    art, gt = mined
    types = gt["mention_types"]
    ref = reference_mentions(gt, split)
    pred = [[m for m in ms if m[2] in types] for ms in art.mentions(split)]
    scores = mention_scores(pred, ref, types)
    assert (scores["reference"] > 0).all(), "every mention type occurs in the generated texts"
    texts = list(FashionGen(smoke_data[split]).products["text"])
    for t in types:
        errors = mention_errors(pred, ref, texts, t, limit=5)
        assert scores.loc[t, "precision"] >= 0.95, (t, scores.loc[t].to_dict(), errors)
        assert scores.loc[t, "recall"] >= 0.95, (t, scores.loc[t].to_dict(), errors)


def test_value_ids_agree_with_ground_truth_entities(mined):
    art, gt = mined
    for split in ("train", "validation"):
        products = gt["splits"][split]
        ids = art.value_ids(split)
        assert art.product_ids(split).tolist() == [p["product_id"] for p in products]
        for t in ("brand", "category", "subcategory", "composition", "season", "fit"):
            assert len(ids[t]) == len(products)
            for i, p in zip(ids[t], products):
                truth = normalise_value(p["entities"].get(t) or "")
                if t == "fit":  # fit is mined from text; a product whose text names no fit has none
                    truth = truth if any(m[2] == "fit" for m in p["mentions"]) else ""
                if not truth:
                    assert i == -1
                elif truth in art.values[t]:
                    assert art.values[t][i] == truth
                else:  # rare in training, or unseen
                    assert art.values[t][i] == OTHER


def test_vocabulary_sizes_priors_and_coverage_on_generated_data(mined):
    art, gt = mined
    fit_values = set(gt["fit_values"])
    assert set(art.values["fit"][:-1]) <= fit_values and len(art.values["fit"]) > 3
    for t in art.types:
        assert 2 <= len(art.values[t]) <= 60  # tens of values, not thousands (composition is parsed)
        assert np.isclose(art.prior[t].sum(), 1.0) and (art.prior[t] > 0).all()
        assert art.counts[t][:-1].min() >= 2  # min_count: rarer values live in "other"
    # brands, categories, subcategories and materials are named in most generated texts, seasons never
    assert art.coverage["brand"]["train"] > 0.3 and art.coverage["season"]["train"] == 0.0


def test_cli_mine_writes_a_loadable_artifact(smoke_data, tmp_path, capsys):
    out = tmp_path / "entities.json"
    code = eiclip(["mine", "--train", str(smoke_data["train"]), "--validation", str(smoke_data["validation"]),
                   "--out", str(out), "--min-count", "3"])
    assert code == 0
    art = load_artifact(out)
    assert art.params["min_count"] == 3 and art.params["prone_tokenizer"] == "eiclip-tiny"
    assert art.prone["brand"].any()  # generated data has ordinary-word brands (confounding 0.8)
    assert "coverage" in capsys.readouterr().out


def test_mining_in_two_processes_writes_the_same_artifact(smoke_data, tmp_path):
    paths = smoke_data["train"], smoke_data["validation"]
    one = mine_dataset(*paths, tmp_path / "one.json", tokenizer=str.split, progress=False)
    two = mine_dataset(*paths, tmp_path / "two.json", tokenizer=str.split, progress=False, n_process=2)
    assert one.id == two.id and (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_cli_mine_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "train.h5"
    bad.write_bytes(b"not hdf5")
    assert eiclip(["mine", "--train", str(bad), "--out", str(tmp_path / "e.json")]) == 2
    assert "train.h5" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_mine_a_file_in_the_real_layout(write_fashiongen_h5, tmp_path):
    """Real-file quirks (latin-1 accents, padding, several views per product) reach the artifact intact."""
    path = write_fashiongen_h5(tmp_path / "fashiongen_256_256_train.h5", views=(1, 3, 2))
    art = mine_dataset(path, None, tmp_path / "entities.json", tokenizer=str.split, progress=False)
    assert art.splits == ["train"] and art.n_products("train") == 3
    assert art.values["brand"] == ["maison kitsuné", OTHER]
    assert art.values["composition"] == ["wool", OTHER]  # "Shell: 60% wool, 40% polyamide. Lining: ..."
    assert art.values["fit"] == ["slim", OTHER]  # "Red Slim-Fit Shirt"
    for ms in art.mentions("train"):  # "Red Slim-Fit Shirt 0. Cotton shirt with appliqué logo."
        assert [(t, v) for _, _, t, v in ms] == [("fit", "slim"), ("subcategory", "shirts"), ("subcategory", "shirts")]
