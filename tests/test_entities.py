"""Entity mining on hand-made inputs: matching rules, fit patterns, composition, vocabularies,
prone flags, the artifact file, and robustness (bad input, property tests on arbitrary text)."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import spacy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eiclip_core.entities import (OTHER, EntityMiner, build_vocabulary, load_artifact, mine_products,
                                  parse_composition, prone_flags, write_artifact)
from eiclip_core.entities.artifact import content_id
from eiclip_core.entities.miner import FIT_NOUNS, as_text
from eiclip_core.entities.scores import mention_scores
from eiclip_core.entities.vocab import surface_variants
from eiclip_core.errors import KitError
from eiclip_core.data.product_text import product_text

VOCAB = {
    "brand": ["Diesel", "Canada Goose", "Goose", "A.P.C.", "Acne Studios", "not"],
    "category": ["TOPS", "T-SHIRTS", "JACKETS & COATS", "DRESSES", "JEANS", "SKIRTS"],
    "composition": ["wool", "cotton", "polyamide"],
}
_MINER = None


def miner() -> EntityMiner:
    """One miner for the module (building it costs far more than a find; hypothesis calls it many times)."""
    global _MINER
    if _MINER is None:
        _MINER = EntityMiner(VOCAB)
    return _MINER


def found(text):
    """[(surface text, type, value)] of the mentions in one text."""
    return [(text[s:e], t, v) for s, e, t, v in miner().find([text])[0]]


# ---------------------------------------------------------------------------------------------
# matching rules

def test_case_insensitive_and_value_as_given():
    assert found("DIESEL and diesel and Diesel") == [("DIESEL", "brand", "Diesel"), ("diesel", "brand", "Diesel"),
                                                   ("Diesel", "brand", "Diesel")]


def test_longest_match_wins():
    assert found("A Canada Goose parka, a goose.") == [("Canada Goose", "brand", "Canada Goose"),
                                                       ("goose", "brand", "Goose")]


def test_category_plural_singular_and_hyphenation():
    text = "Tops, a top, T-shirts, a T-shirt, a tshirt, a t shirt, a dress, two dresses, jeans, a skirt."
    got = found(text)
    assert [g[0] for g in got] == ["Tops", "top", "T-shirts", "T-shirt", "tshirt", "t shirt", "dress",
                                   "dresses", "jeans", "skirt"]
    assert {g[2] for g in got} == {"TOPS", "T-SHIRTS", "DRESSES", "JEANS", "SKIRTS"}
    # "jacket" and "coats" both mean the joint category; brands get no plural forms
    assert found("a jacket and two coats") == [("jacket", "category", "JACKETS & COATS"),
                                              ("coats", "category", "JACKETS & COATS")]
    assert found("two Diesels") == []
    # a plural-only garment has no singular: "short" is not "shorts", "jean" is not "jeans"
    assert "jean" not in surface_variants("jeans", "category")


def test_no_firing_inside_words():
    assert found("Topstitched seams, dieselpunk print, nottingham, woollen cottons") == []
    assert found("cannot") == []  # spaCy splits "cannot" into "can" + "not": the brand "not" must not fire
    assert found("top-stitched wool-blend") == [("top", "category", "TOPS"), ("wool", "composition", "wool")]


def test_offsets_are_into_the_original_text():
    text = "  Ünïcödé prefix — Acne Studios\tcotton\nT-SHIRT; A.P.C. jeans"
    ms = miner().find([text])[0]
    assert [text[s:e] for s, e, _, _ in ms] == ["Acne Studios", "cotton", "T-SHIRT", "A.P.C.", "jeans"]
    assert ms == sorted(ms)


def test_fit_patterns():
    text = ("Slim-fit jeans. Relaxed fit. A slimfit shirt. Oversized coat. Straight silk embroidered skirt. "
            "Regular-Fit top. Loose silhouette.")
    assert [(s, v) for s, t, v in found(text) if t == "fit"] == [
        ("Slim", "slim"), ("Relaxed", "relaxed"), ("slimfit", "slim"), ("Oversized", "oversized"),
        ("Straight", "straight"), ("Regular", "regular"), ("Loose", "loose")]


def test_fit_words_outside_a_fit_context_are_not_fits():
    assert [m for m in found("A slim wallet at a regular price, straight hem, slim. Straight to it.")
            if m[1] == "fit"] == []


def test_miner_reports_exactly_the_configured_types():
    m = EntityMiner({"brand": ["Diesel"]}, fit_words=())
    assert m.find(["Diesel slim-fit tops"]) == [[(0, 6, "brand", "Diesel")]]


@pytest.mark.parametrize("bad", [None, 3, 2.5, float("nan"), b"\xff\xfe Diesel \x00", "", " \t\n",
                                 "\udcff Diesel", "\x00\x01\x02", "🙂Diesel🙂", "İ DİESEL", "tops\u200b",
                                 "é" * 5000, "Diesel " * 20000, ["a list"], {"a": 1}])
def test_bad_input_never_crashes(bad):
    out = miner().find([bad, "Diesel"])
    assert len(out) == 2 and out[1] == [(0, 6, "brand", "Diesel")]
    assert all(isinstance(m, tuple) and len(m) == 4 for m in out[0])


def test_bytes_decode_as_latin1_and_surrogates_keep_offsets():
    assert miner().find([b"caf\xe9 Diesel"]) == [[(5, 11, "brand", "Diesel")]]
    assert miner().find(["\udcff Diesel"]) == [[(2, 8, "brand", "Diesel")]]


def test_two_processes_give_the_same_mentions():
    texts = [f"Diesel slim-fit T-shirt number {i} in cotton, a Canada Goose top." for i in range(50)]
    assert miner().find(texts, batch_size=7, n_process=2) == miner().find(texts)


# property tests: whatever the text, spans are in bounds, do not overlap, and spell their value

_WORDS = ["Diesel", "canada", "goose", "Canada Goose", "A.P.C.", "tops", "T-shirt", "tshirt", "jacket",
          "coats", "slim", "fit", "-", "slim-fit", "oversized", "straight", "skirt", "wool", "not", "cannot",
          ".", ",", "'s", "  ", "\n", "é", "İ", "\u0301", "\udcff"]
_TEXTS = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=25).flatmap(
    lambda parts: st.sampled_from(["", " ", "-"]).map(lambda sep: sep.join(parts)))


def _spellings(entity_type, value):
    if entity_type == "fit":
        return {value} | {value + n for n in FIT_NOUNS}
    return {f.lower() for f in surface_variants(value, entity_type, value)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS)
def test_property_mentions_are_well_formed(text):
    ms = miner().find([text])[0]
    spans = sorted({(s, e) for s, e, _, _ in ms})
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2  # no overlap
    for s, e, t, v in ms:
        assert 0 <= s < e <= len(text)
        assert re.sub(r"\s+", " ", text[s:e].lower()) in _spellings(t, v)
        assert not (s > 0 and text[s - 1].isalnum()) and not (e < len(text) and text[e].isalnum())
        assert t == "fit" or v in VOCAB[t]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=8))
def test_property_one_result_per_text(texts):
    assert len(miner().find(texts)) == len(texts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TEXTS, min_size=1, max_size=6))
@example(["A Canada", "Goose coat"]).via("a multi-word value across two texts")
@example(["Straight", "silk skirt", "slim", "-fit"]).via("fit patterns across texts")
@example(["cannot", "e.g. Diesel", "", "\n", "A.P.C."]).via("special cases and empty texts")
def test_property_a_text_gets_the_same_mentions_whatever_its_batch(texts):
    # The miner tokenizes and matches a batch as one newline-joined Doc: no match may span two texts,
    # and no text may change what its neighbours' tokens are.
    assert miner().find(texts) == [miner().find([t])[0] for t in texts]


@pytest.mark.slow  # 150 drawn texts, a blank spaCy pipeline built for each
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS)
def test_property_tokens_are_those_of_blank_english(text):
    # The miner drops spaCy's whitespace special cases (they stop the tokenizer's cache); tokens must not change.
    reference, text = spacy.blank("en").tokenizer, as_text(text)  # as the miner sees it (no lone surrogates)
    assert [t.text for t in miner().nlp.make_doc(text)] == [t.text for t in reference(text)]


# ---------------------------------------------------------------------------------------------
# composition

@pytest.mark.parametrize("raw, main", [
    ("100% cotton.", "cotton"),
    ("Shell: 60% wool, 40% polyamide. Lining: 100% viscose.", "wool"),
    ("Lining: 100% silk. Shell: 80% cotton, 20% nylon.", "cotton"),  # the shell, not the first section
    ("52% polyester, 48% cotton.", "polyester"),
    ("48% cotton, 52% polyester.", "polyester"),
    ("Body: 95% virgin wool, 5% elastane. Trim: 100% lambskin.", "wool"),
    ("Outershell: 100% nylon. Fill: 90% goose down, 10% feathers.", "nylon"),
    ("Leather.", "leather"),
    ("Upper: calfskin. Sole: rubber.", "calfskin"),
    ("  100 % COTTON  ", "cotton"),
    ("70,5% wool, 29,5% cashmere", "wool"),
    ("50% cotton, 50% linen.", "cotton"),  # equal shares: the first
])
def test_parse_composition(raw, main):
    c = parse_composition(raw)
    assert c.main == main
    assert main in c.detail


@pytest.mark.parametrize("bad", [None, 12, "", "   ", "%%%", ".", b"100% cotton"])
def test_parse_composition_bad_input(bad):
    assert parse_composition(bad).main == ""


# ---------------------------------------------------------------------------------------------
# vocabulary, prior, "other"

def test_vocabulary_other_bucket_and_prior():
    values = ["a"] * 5 + ["b"] * 2 + ["c"] + ["d"] + ["", ""]
    voc = build_vocabulary(values, min_count=2, alpha=1.0)
    assert voc.values == ["a", "b", OTHER]
    assert voc.counts.tolist() == [5, 2, 2]  # c and d went to other; missing values are not counted
    assert np.allclose(voc.prior, np.array([6, 3, 3]) / 12)  # (n + 1) / (N + |V|)
    assert voc.ids(["a", "c", "d", "unseen", ""]).tolist() == [0, 2, 2, 2, -1]
    assert build_vocabulary(values, min_count=1).values == ["a", "b", "c", "d", OTHER]
    assert build_vocabulary(values, min_count=3).values == ["a", OTHER]


def test_vocabulary_edge_cases():
    empty = build_vocabulary(["", ""])
    assert empty.values == [OTHER] and empty.prior.tolist() == [1.0]
    assert empty.ids(["x", ""]).tolist() == [0, -1]
    # a value literally called "other" joins the bucket instead of duplicating it
    voc = build_vocabulary(["other", "other", "x", "x"])
    assert voc.values == ["x", OTHER] and voc.ids(["other"]).tolist() == [1]


def test_prone_flags_with_an_injected_tokenizer():
    known = {"diesel", "top", "canada", "goose"}
    tokenize = lambda s: [w if w in known else c for w in s.split() for c in ([w] if w in known else list(w))]
    flags, reasons = prone_flags(["diesel", "canada goose", "kudrir", "ab", OTHER], tokenize, max_pieces=4)
    assert flags.tolist() == [True, True, True, False, False]
    assert reasons == ["ordinary word", "ordinary words", "split into 6 pieces", "", ""]
    assert prone_flags(["diesel"], None)[0].tolist() == [False]


# ---------------------------------------------------------------------------------------------
# artifact

def _products(rows):
    df = pd.DataFrame(rows, columns=["product_id", "name", "description", "brand", "category", "subcategory",
                                     "composition", "season", "gender", "department"])
    df["text"] = [product_text(n, d) for n, d in zip(df["name"], df["description"])]
    return df


TRAIN = _products([
    (1, "Black Slim-Fit T-Shirt", "Cotton t-shirt by Diesel.", "DIESEL", "TOPS", "T-SHIRTS", "100% cotton.", "SS2016", "MEN", "CLOTHING"),
    (2, "Grey top", "Relaxed-fit cotton top.", "Diesel", "TOPS", "T-SHIRTS", "100% cotton", "SS2016", "WOMEN", "CLOTHING"),
    (3, "Canada Goose parka", "Oversized parka. Shell: polyamide.", "Canada Goose", "JACKETS & COATS", "PARKAS",
     "Shell: 60% polyamide, 40% cotton. Fill: 90% down.", "FW2017", "MEN", "CLOTHING"),
    (4, "", "", None, None, None, None, None, None, None),  # a product with no text and no metadata
])
VALID = _products([
    (9, "Slim jeans", "Slim-fit jeans by Acne Studios.", "Acne Studios", "JEANS", "JEANS", "98% cotton, 2% elastane", "SS2018", "MEN", "CLOTHING"),
    (8, "Top", "Diesel top in wool.", "DIESEL", "TOPS", "T-SHIRTS", "100% wool", "SS2016", "WOMEN", "CLOTHING"),
])


def _content():
    return mine_products({"train": TRAIN, "validation": VALID}, lambda s: s.split(), progress=False)


def test_artifact_round_trip(tmp_path):
    written = write_artifact(tmp_path / "entities.json", _content())
    art = load_artifact(tmp_path / "entities.json")
    assert art.id == written.id == content_id(json.loads((tmp_path / "entities.json").read_text()))
    assert art.types == ["brand", "category", "subcategory", "composition", "season", "fit"]
    assert art.values["brand"] == ["diesel", OTHER]  # canada goose: 1 product < min_count 2
    assert art.values["composition"] == ["cotton", OTHER]
    for t in art.all_types:
        assert art.values[t][-1] == OTHER
        assert art.prior[t].dtype == np.float64 and np.isclose(art.prior[t].sum(), 1.0)
        assert art.prone[t].dtype == bool and len(art.prone[t]) == len(art.values[t])
    train_ids, val_ids = art.value_ids("train"), art.value_ids("validation")
    assert train_ids["brand"].tolist() == [0, 0, 1, -1]
    assert val_ids["brand"].tolist() == [1, 0]  # acne studios unseen in training -> other
    assert val_ids["category"].dtype == np.int64 and val_ids["category"].tolist() == [1, 0]
    assert art.product_ids("validation").tolist() == [9, 8]
    # fit comes from the text: first fit word of each product
    assert [art.values["fit"][i] if i >= 0 else None for i in train_ids["fit"]] == [OTHER, OTHER, OTHER, None]
    assert art.mentions("validation")[1] == [(0, 3, "category", "tops"), (5, 11, "brand", "diesel"),
                                             (12, 15, "category", "tops"), (19, 23, "composition", "wool")]
    assert art.mentions("train")[3] == []
    # coverage: share of products whose text names their own value
    assert art.coverage["brand"]["train"] == pytest.approx(2 / 3)
    assert art.coverage["composition"] == {"train": 1.0, "validation": 0.5}  # "jeans by Acne Studios": no cotton
    assert art.coverage["fit"]["train"] == 0.75  # fit: share of products whose text names a fit
    assert write_artifact(tmp_path / "again.json", _content()).id == art.id  # deterministic


def test_mentions_are_spelled_in_the_text(tmp_path):
    art = write_artifact(tmp_path / "e.json", _content())
    for split, df in (("train", TRAIN), ("validation", VALID)):
        for text, ms in zip(df["text"], art.mentions(split)):
            for s, e, t, v in ms:
                assert re.sub(r"\s+", " ", text[s:e].lower()) in _spellings(t, v)


def test_artifact_loader_rejects_bad_files(tmp_path):
    with pytest.raises(KitError, match="missing.json"):
        load_artifact(tmp_path / "missing.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(KitError, match="garbage.json"):
        load_artifact(tmp_path / "garbage.json")
    content = write_artifact(tmp_path / "ok.json", _content()).to_dict()

    def broken(name, change):
        c = json.loads(json.dumps(content))
        change(c)
        (tmp_path / name).write_text(json.dumps(c))
        with pytest.raises(KitError, match=name):
            load_artifact(tmp_path / name)

    broken("v2.json", lambda c: c.update(version=2))
    broken("edited.json", lambda c: c["vocab"]["brand"]["prior"].reverse())  # id no longer matches
    broken("nokey.json", lambda c: c.pop("splits"))
    broken("noother.json", lambda c: c["vocab"]["brand"]["values"].pop())
    broken("short.json", lambda c: c["splits"]["train"]["value_ids"]["brand"].pop())
    broken("range.json", lambda c: c["splits"]["train"]["value_ids"]["brand"].__setitem__(0, 99))


def test_mention_scores_counts():
    pred = [[(0, 3, "brand", "x"), (4, 6, "fit", "slim")], [(1, 2, "brand", "y")]]
    ref = [[(0, 3, "brand", "x")], [(1, 2, "brand", "z"), (5, 9, "fit", "loose")]]
    s = mention_scores(pred, ref, ["brand", "fit"])
    assert s.loc["brand", ["tp", "predicted", "reference"]].tolist() == [1, 2, 2]
    assert s.loc["brand", "precision"] == 0.5 and s.loc["fit", "recall"] == 0.0


def test_miniLM_tokenizer_flags_ordinary_words():
    from eiclip_core.entities import backbone_tokenizer

    flags, reasons = prone_flags(["diesel", "canada goose", "comme des garcons", "acne"],
                                 backbone_tokenizer("eiclip-tiny"), max_pieces=4)
    assert reasons[0] == "ordinary word" and reasons[1] == "ordinary words"
    assert reasons[2].startswith("split into")
    assert flags.tolist()[:3] == [True, True, True]


def test_unknown_backbone_is_refused_naming_the_available_ones(tmp_path, write_fashiongen_h5, capsys):
    """open_clip falls back to CLIP's tokenizer for a name it does not know; mining must not."""
    from eiclip_core.cli import main
    from eiclip_core.entities import backbone_tokenizer

    with pytest.raises(KitError, match=r"backbone 'nosuchmodel': unknown; available: eiclip-tiny .*ViT-B-32"):
        backbone_tokenizer("nosuchmodel")
    with pytest.raises(KitError, match=r"close to what you typed: ViT-B-32"):
        backbone_tokenizer("ViT-B32")
    assert backbone_tokenizer("ViT-B-32")("diesel") == ["diesel"]  # a known open_clip name still works

    out = tmp_path / "entities.json"
    args = ["mine", "--train", str(write_fashiongen_h5(tmp_path / "train.h5")), "--out", str(out)]
    assert main(args + ["--backbone", "nosuchmodel"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: backbone 'nosuchmodel': unknown; available:")
    assert not out.exists()


def test_span_examples_fall_back_to_texts_naming_fewer_types():
    """Notebook 02 shows texts naming three types; a catalog whose texts name only a subcategory still
    gets examples, and texts naming nothing are never shown."""
    from eiclip_core.entities.report import example_rows

    three = [(0, 1, "brand", "a"), (2, 3, "fit", "b"), (4, 5, "category", "c")]
    one = [(0, 5, "subcategory", "shirt")]
    assert example_rows([one, three, [], three, three, one, three, three], n=4) == [1, 3, 4, 6]
    assert example_rows([[], one, [], one, [(0, 2, "fit", "x")] + one], n=2) == [1, 4]
    assert example_rows([[], []]) == []


@pytest.mark.parametrize("field, change, problem", [
    ("splits.validation", lambda c: c["splits"].__setitem__("validation", 3), "splits['validation'] must be an object"),
    ("splits", lambda c: c.__setitem__("splits", [1]), "'splits' must name at least one split"),
    ("n_products", lambda c: c["splits"]["train"].__setitem__("n_products", "4"),
     "splits['train']['n_products'] must be a whole number"),
    ("product_id", lambda c: c["splits"]["train"].__setitem__("product_id", 4),
     "splits['train']['product_id'] must be a list"),
    ("value_ids", lambda c: c["splits"]["train"].__setitem__("value_ids", [0]),
     "splits['train']['value_ids'] must be an object"),
    ("value id", lambda c: c["splits"]["train"]["value_ids"]["brand"].__setitem__(0, "x"),
     "splits['train']['value_ids']['brand'] must be a list of whole numbers"),
    ("vocab", lambda c: c.__setitem__("vocab", 7), "vocab['brand'] missing"),
    ("values", lambda c: c["vocab"]["brand"].__setitem__("values", 5), "vocab['brand']['values'] must be a list"),
    ("coverage", lambda c: c["vocab"]["brand"].__setitem__("coverage", 5),
     "vocab['brand']['coverage'] must be an object"),
])
def test_artifact_field_of_the_wrong_kind_is_one_line_naming_file_and_field(field, change, problem, tmp_path):
    """A hand-edited artifact (a number where an object or a list belongs) is refused naming the file and
    the field, never a TypeError from deep inside the checks."""
    content = write_artifact(tmp_path / "ok.json", _content()).to_dict()
    c = json.loads(json.dumps(content))
    change(c)
    (tmp_path / "bad.json").write_text(json.dumps(c))
    with pytest.raises(KitError, match="^" + re.escape(f"{tmp_path / 'bad.json'}: {problem}")):
        load_artifact(tmp_path / "bad.json")
