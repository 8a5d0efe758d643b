"""Evaluation: protocols over synthetic embeddings, the entity breakdown, the results table, the cache."""
import json
import types

import numpy as np
import torch
import pytest

from eiclip_core.errors import KitError
from eiclip_core.evaluation.embeddings import (Embeddings, cache_key, encode_batches, encode_texts, extract_embeddings,
                                               load_cached, save_cached)
from eiclip_core.evaluation.evaluate import Evaluation, write_results
from eiclip_core.evaluation.scoring import (bootstrap_intervals, entity_breakdown, evaluate_embeddings, full_protocol,
                                            retrieval_examples)
from eiclip_core.evaluation.metrics import KS, metric_keys, positive_ranks, retrieval_metrics, retrieval_ranks
from eiclip_core.evaluation.results import (breakdown_table, display_table, published_records, results_markdown,
                                            summary_table, to_markdown)

KEYS = metric_keys(KS)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n_prod=150, views=(1, 2, 3), noise=1.0, seed=0, d=16):
    """Products with 1-3 views; texts and views are noisy copies of a product vector."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_prod, d))
    n_views = rng.choice(views, n_prod)
    image_product = np.repeat(np.arange(n_prod), n_views)
    image = unit(base[image_product] + noise * rng.normal(size=(len(image_product), d)))
    text = unit(base + noise * rng.normal(size=(n_prod, d)))
    first_view = np.concatenate([[0], np.cumsum(n_views)[:-1]])
    subs = np.array([f"s{i % 3}" for i in range(n_prod)])
    pids = rng.permutation(n_prod) * 7 + 100
    return Embeddings(image, image_product, first_view, text), pids, subs


def test_protocols_select_the_right_images_and_candidates():
    emb, pids, subs = synthetic()
    out = evaluate_embeddings(emb, pids, subs, n_sample_queries=100, seed=3, bootstrap=50)
    full, views, s100 = out["full"], out["full-all-views"], out["sample-100"]
    ref_full = retrieval_metrics(emb.image[emb.first_view], emb.text, pids, pids)
    ref_views = retrieval_metrics(emb.image, emb.text, pids[emb.image_product], pids)
    assert {k: full["metrics"][k] for k in KEYS} == ref_full
    assert {k: views["metrics"][k] for k in KEYS} == ref_views
    assert full["n_queries"] == {"i2t": 150, "t2i": 150}
    assert views["n_queries"] == {"i2t": len(emb.image), "t2i": 150}
    assert views["n_candidates"] == {"i2t": 150, "t2i": len(emb.image)}
    assert s100["n_candidates"] == 101 and s100["n_queries"] == 100 and "mean_std" in s100["metrics"]
    # more views can only help text->image at a given K (any view counts)
    assert views["metrics"]["t2i_r10"] >= full["metrics"]["t2i_r10"]
    for k in KEYS:  # the interval brackets the point estimate
        lo, hi = full["metrics"][f"{k}_ci"]
        assert lo <= full["metrics"][k] <= hi


def test_bootstrap_is_seeded_and_narrows_with_more_queries():
    rng = np.random.default_rng(0)
    small, large = rng.integers(0, 20, 50), rng.integers(0, 20, 5000)
    a = bootstrap_intervals(small, small, True, n=200, seed=1)
    assert a == bootstrap_intervals(small, small, True, n=200, seed=1)
    assert a != bootstrap_intervals(small, small, True, n=200, seed=2)
    b = bootstrap_intervals(large, large, True, n=200, seed=1)
    width = lambda m: m["i2t_r5_ci"][1] - m["i2t_r5_ci"][0]  # noqa: E731
    assert width(b) < width(a) / 3


def fake_artifact(n):
    """The parts of an EntityArtifact the breakdown reads: brand with a prone value, fit."""
    brand = np.arange(n) % 3  # values 0, 1, 2; value 1 prone
    fit = np.where(np.arange(n) % 4 == 0, -1, 0)  # a missing value for a quarter of products
    return types.SimpleNamespace(types=["brand", "fit"], path="entities.json",
                                 prone={"brand": np.array([False, True, False, False]),
                                        "fit": np.array([True, False])},
                                 value_ids=lambda split: {"brand": brand, "fit": fit})


def test_entity_breakdown_groups_queries_by_prone_status():
    n = 12
    i2t = np.array([0, 5, 0, 0, 5, 0, 0, 5, 0, 0, 5, 0])  # brand-1 products (index % 3 == 1) rank 5
    t2i = np.zeros(n, dtype=int)
    rows = entity_breakdown(i2t, t2i, fake_artifact(n), n)
    by = {(r["type"], r["status"]): r for r in rows}
    assert by[("brand", "prone")]["n"] == 4 and by[("brand", "prone")]["i2t_r1"] == 0.0
    assert by[("brand", "prone")]["i2t_r10"] == 100.0
    assert by[("brand", "not prone")]["n"] == 8 and by[("brand", "not prone")]["i2t_r1"] == 100.0
    assert by[("fit", "prone")]["n"] == 9  # products without a fit value are left out
    assert ("fit", "not prone") not in by
    with pytest.raises(KitError, match="entities.json"):
        entity_breakdown(i2t, t2i, fake_artifact(n), n + 1)


def _records(seeds, rng):
    recs = []
    for row in ("zero-shot", "clip-ft", "ei-clip"):
        for protocol in ("full", "full-all-views", "sample-100"):
            for seed in (seeds if row != "zero-shot" else [None]):
                m = {k: float(rng.uniform(0, 100)) for k in KEYS}
                if protocol == "sample-100":
                    m.update({f"{k}_std": 1.5 for k in KEYS})
                else:
                    m.update({f"{k}_ci": [m[k] - 2, m[k] + 3] for k in KEYS})
                recs.append({"row": row, "protocol": protocol, "seed": seed, **m})
    return recs


def test_summary_table_means_and_spreads():
    recs = _records([0, 1, 2], np.random.default_rng(0))
    table = summary_table(recs)
    assert len(table) == 9 and list(table["protocol"][:3]) == ["full"] * 3
    line = table[(table["row"] == "EI-CLIP") & (table["protocol"] == "full")].iloc[0]
    vals = [r["t2i_r1"] for r in recs if r["row"] == "ei-clip" and r["protocol"] == "full"]
    assert line["t2i_r1"] == pytest.approx(np.mean(vals))
    assert line["t2i_r1_hi"] - line["t2i_r1"] == pytest.approx(np.std(vals, ddof=1))
    assert line["t2i_r1"] - line["t2i_r1_lo"] == pytest.approx(np.std(vals, ddof=1))
    assert line["spread"].endswith("(std over 3 seeds)")
    zs = table[(table["row"] == "CLIP zero-shot")].set_index("protocol")
    assert zs.loc["full", "spread"].endswith("(95% bootstrap over queries)")
    assert zs.loc["full", "mean_hi"] - zs.loc["full", "mean_lo"] == pytest.approx(5.0)
    assert zs.loc["full", "mean_lo"] == pytest.approx(zs.loc["full", "mean"] - 2)
    assert zs.loc["sample-100", "spread"] == "± 1.50 (std over sampling repeats)"


def test_published_numbers_only_when_asked_and_labelled_with_protocol():
    recs = _records([0], np.random.default_rng(1))
    assert not summary_table(recs)["row"].str.contains("published").any()
    table = summary_table(recs, published=True)
    pub = table[table["row"].str.endswith("(published)")]
    ei = pub[pub["row"] == "EI-CLIP (published)"].iloc[0]
    assert ei["protocol"] == "sample-100" and ei["i2t_r1"] == 38.70 and ei["mean"] == 65.02
    assert set(pub["protocol"]) == {"sample-100", "full"}
    fashionbert = [r for r in published_records() if r["row"] == "FashionBERT"][0]
    assert fashionbert["mean"] == pytest.approx(round(np.mean([23.96, 46.31, 52.12, 26.75, 46.48, 55.74]), 2))
    md = to_markdown(display_table(table))
    assert "| EI-CLIP (published) | sample-100 |  | 38.70 | 72.20 |" in md
    assert "_lo" not in md and "_hi" not in md


def test_write_results_is_json_and_markdown(tmp_path):
    recs = _records([0, 1], np.random.default_rng(2))
    breakdown = [{"row": "ei-clip", "seed": 0, "type": "brand", "status": "prone", "n": 4,
                  **{k: 50.0 for k in KEYS}}]
    ev = Evaluation(profile="smoke", records=recs, breakdown=breakdown, summary=summary_table(recs),
                    breakdown_summary=breakdown_table(breakdown), embeddings={}, data_path=None,
                    published=False)
    json_path, md_path = write_results(ev, tmp_path / "reports")
    data = json.loads(json_path.read_text())
    assert len(data["records"]) == len(recs) and data["published"] == []
    assert all(set(KEYS) <= set(r) for r in data["records"])
    md = md_path.read_text()
    assert "## Breakdown by entity type" in md and "| EI-CLIP | brand | prone | 4 | 50.00 |" in md
    assert md == results_markdown("smoke", ev.summary, ev.breakdown_summary)
    assert not list((tmp_path / "reports").glob(".*tmp"))  # atomic writes leave no temp files


def test_cache_round_trip_plain_arrays_and_damaged_file(tmp_path):
    emb, _, _ = synthetic(n_prod=20)
    path = tmp_path / "cache" / "emb-x.npz"
    save_cached(path, emb)
    assert path.exists() and not list(path.parent.glob(".*tmp"))
    back = load_cached(path)
    for k, v in emb.arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    # an object array (would need pickle) and a truncated file are refused with a warning, never loaded
    np.savez(path, image=np.array([{"a": 1}], dtype=object), image_product=emb.image_product,
             first_view=emb.first_view, text=emb.text)
    with pytest.warns(UserWarning, match="unreadable embedding cache"):
        assert load_cached(path) is None
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="recomputing"):
        assert load_cached(path) is None
    assert load_cached(tmp_path / "missing.npz") is None


def test_cache_key_changes_with_checkpoint_data_and_device(tmp_path):
    data = tmp_path / "validation.h5"
    data.write_bytes(b"a")
    k = cache_key({"checkpoint": "abc"}, data, "cpu")
    assert k == cache_key({"checkpoint": "abc"}, data, "cpu")
    assert k != cache_key({"checkpoint": "abd"}, data, "cpu")
    assert k != cache_key({"checkpoint": "abc"}, data, "cuda")
    data.write_bytes(b"ab")  # another size (and mtime): another key
    assert k != cache_key({"checkpoint": "abc"}, data, "cpu")


def test_retrieval_examples_rank_like_the_metric():
    emb, pids, _ = synthetic(n_prod=40)
    texts = [f"product {i}" for i in range(40)]
    examples = retrieval_examples(emb, texts, n=5, k=5, seed=0)
    ranks = positive_ranks(emb.text, emb.image[emb.first_view], np.arange(40), np.arange(40))
    for e in examples:
        assert e["text"] == texts[e["query"]] and len(e["top"]) == 5
        assert np.all(np.diff(e["scores"]) <= 0)
        assert (e["query"] in e["top"]) == (ranks[e["query"]] < 5)
        assert e["rank"] == ranks[e["query"]]
    assert examples == retrieval_examples(emb, texts, n=5, k=5, seed=0)


def test_full_protocol_scores_first_views_against_one_text_per_product():
    """The one full-protocol scorer: first views only (other views never compete), every product a query in
    both directions; one image per product (the validation during training) scores the same way."""
    emb, pids, _ = synthetic()
    scored = full_protocol(emb, pids)
    i2t, t2i = retrieval_ranks(emb.image[emb.first_view], emb.text, pids, pids)
    np.testing.assert_array_equal(scored["ranks"][0], i2t)
    np.testing.assert_array_equal(scored["ranks"][1], t2i)
    assert scored["metrics"] == retrieval_metrics(emb.image[emb.first_view], emb.text, pids, pids)
    one = Embeddings.one_view(emb.image[emb.first_view], emb.text)
    assert full_protocol(one, pids)["metrics"] == scored["metrics"]


# ---- end to end on generated data, with a small stand-in model (the real ones are tested in test_train)


class StandInModel(torch.nn.Module):
    """Deterministic encoders with the EICLIP interface: pixels and characters to unit vectors."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.image_proj = torch.nn.Parameter(torch.randn(3 * 8 * 8, 16, generator=g))
        self.char_emb = torch.nn.Parameter(torch.randn(256, 16, generator=g))

    def encode_image(self, images):  # (B, 3, 8, 8) -> (B, 16)
        return torch.nn.functional.normalize(images.flatten(1) @ self.image_proj, dim=1)

    def encode_text(self, tokens):  # (B, 32) -> (B, 16)
        return torch.nn.functional.normalize(self.char_emb[tokens].mean(1), dim=1)


def stand_in_backbone():
    def preprocess(img):
        return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255

    def tokenizer(texts):
        return torch.tensor([[ord(c) % 256 for c in t[:32].ljust(32)] for t in texts])

    return types.SimpleNamespace(preprocess_val=preprocess, tokenizer=tokenizer)


def test_encode_loop_keeps_order_and_batching_does_not_change_it():
    model, backbone = StandInModel(0), stand_in_backbone()
    texts = [f"product {i} in red" for i in range(23)]
    whole = model.encode_text(backbone.tokenizer(texts)).detach().numpy()
    for batch_size in (1, 5, 64):
        out = encode_texts(model.encode_text, backbone.tokenizer, texts, "cpu", batch_size=batch_size)
        assert out.dtype == np.float32 and out.shape == (23, 16)
        np.testing.assert_allclose(out, whole, atol=1e-6)
    assert encode_batches(model.encode_text, [], "cpu").shape == (0, 0)  # nothing to encode


def test_probe_features_are_encoded_like_the_evaluation_features(smoke_data):
    """The linear probe is fitted on features from the same encode loop as the validation features it is
    scored on (one precision on every device)."""
    from eiclip_core.evaluation.linear_probe import first_view_features

    model, backbone = StandInModel(0), stand_in_backbone()
    emb = extract_embeddings(model, backbone, smoke_data["validation"], "cpu", progress=False)
    products = np.array([0, 3, 4, 17])
    probed = first_view_features(model, backbone, smoke_data["validation"], products, "cpu")
    np.testing.assert_allclose(probed, emb.image[emb.first_view][products], atol=1e-6)


@pytest.fixture
def evaluation_setup(smoke_data, tmp_path, monkeypatch):
    """A data folder with the smoke validation split, two finished stand-in runs and a stand-in artifact."""
    import shutil

    import eiclip_core.entities
    import eiclip_core.model.factory
    from eiclip_core.model.checkpoint import save_checkpoint
    from eiclip_core.data import FashionGen

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(smoke_data["validation"], data_dir / "validation.h5")
    products = FashionGen(data_dir / "validation.h5").products
    loads = []
    for i, row in enumerate(("clip-ft", "ei-clip")):
        run = data_dir / "runs" / row / "seed0"
        run.mkdir(parents=True)
        save_checkpoint(run / "final.pt", {"model": {"w": torch.full((3,), float(i))}})  # distinct ids
        (run / "done.json").write_text("{}")
        (run / "config.json").write_text(json.dumps({"entity_artifact_id": "stand-in"}))

    def load_run(run_dir, device):
        loads.append(str(run_dir))
        return StandInModel(len(loads) + 1), stand_in_backbone(), None

    def zero_shot(name, pretrained, entities_path, device):
        loads.append("zero-shot")
        return StandInModel(0), stand_in_backbone()

    artifact = fake_artifact(len(products))
    artifact.product_ids = lambda split: products["product_id"].to_numpy()
    artifact.id = "stand-in"
    monkeypatch.setattr(eiclip_core.model.factory, "load_run", load_run)
    monkeypatch.setattr(eiclip_core.model.factory, "zero_shot", zero_shot)
    monkeypatch.setattr(eiclip_core.entities, "load_artifact", lambda path: artifact)
    return data_dir, loads


def test_evaluate_profile_end_to_end_with_cache(evaluation_setup, tmp_path):
    from eiclip_core.model.checkpoint import checkpoint_id
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.pipeline.profiles import get_profile

    data_dir, loads = evaluation_setup
    profile = get_profile("smoke", rows=("clip-ft", "ei-clip"), seeds=(0,))
    first = evaluate_profile(profile, data_dir, device="cpu", seed=0)
    assert sorted(loads) == sorted(["zero-shot", str(data_dir / "runs/clip-ft/seed0"),
                                    str(data_dir / "runs/ei-clip/seed0")])
    assert len(list((data_dir / "cache").glob("emb-*.npz"))) == 3
    assert [(r["row"], r["protocol"]) for r in first.records][:3] == [
        ("zero-shot", "full"), ("zero-shot", "full-all-views"), ("zero-shot", "sample-100")]
    rec = first.records[3]
    assert rec["row"] == "clip-ft" and rec["seed"] == 0
    assert rec["checkpoint_hash"] == checkpoint_id(data_dir / "runs/clip-ft/seed0/final.pt")
    assert rec["checkpoint_hash"] != first.records[-1]["checkpoint_hash"]  # the ei-clip run's
    emb = first.embeddings[("clip-ft", 0)]
    assert emb.text.shape == (128, 16) and len(emb.image) == len(emb.image_product) > 128
    assert np.allclose(np.linalg.norm(emb.image, axis=1), 1, atol=1e-5)
    assert {b["row"] for b in first.breakdown} == {"zero-shot", "clip-ft", "ei-clip"}
    # second evaluation: every embedding from the cache (no model loaded), identical numbers
    loads.clear()
    second = evaluate_profile(profile, data_dir, device="cpu", seed=0)
    assert loads == [] and second.records == first.records
    json_path, _ = write_results(second, tmp_path / "reports")
    assert json.loads(json_path.read_text())["records"] == json.loads(json.dumps(first.records))


@pytest.mark.parametrize("missing", ["done.json", "final.pt", "config.json"])
def test_missing_run_is_a_clear_error_and_writes_nothing(missing, evaluation_setup, tmp_path):
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.pipeline.profiles import get_profile

    data_dir, loads = evaluation_setup
    (data_dir / "runs/ei-clip/seed0" / missing).unlink()
    with pytest.raises(KitError, match="runs/ei-clip/seed0: run not finished"):
        evaluate_profile(get_profile("smoke"), data_dir, device="cpu")
    assert loads == [] and not (data_dir / "cache").exists()


def test_run_of_another_entity_artifact_is_refused_by_name(evaluation_setup):
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.pipeline.profiles import get_profile

    data_dir, loads = evaluation_setup
    (data_dir / "runs/ei-clip/seed0/config.json").write_text(json.dumps({"entity_artifact_id": "older"}))
    profile = get_profile("smoke", rows=("clip-ft", "ei-clip"), seeds=(0,))
    with pytest.raises(KitError, match="runs/ei-clip/seed0: run trained on entity artifact older, the data's is stand-in"):
        evaluate_profile(profile, data_dir, device="cpu")
    assert loads == [] and not (data_dir / "cache").exists()


def test_a_split_too_small_for_sample100_leaves_it_out_and_says_so(evaluation_setup, write_fashiongen_h5, tmp_path,
                                                                    capsys):
    """40 validation products (a small imported catalog): sample-100 has no record, never a number over
    fewer candidates; results.json and results.md say it was not measured and why."""
    import eiclip_core.entities
    from eiclip_core.data import FashionGen
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.pipeline.profiles import get_profile

    data_dir, loads = evaluation_setup
    pids = FashionGen(write_fashiongen_h5(data_dir / "validation.h5", views=(1, 2) * 20)).products["product_id"]
    artifact = eiclip_core.entities.load_artifact(data_dir / "entities.json")  # the fixture's stand-in
    artifact.product_ids, artifact.value_ids = lambda split: pids.to_numpy(), fake_artifact(40).value_ids
    evaluation = evaluate_profile(get_profile("smoke", rows=("clip-ft",), seeds=(0,)), data_dir, device="cpu")
    why = ("40 validation products, fewer than the 101 candidates each query needs (import more products or "
           "raise --val-fraction)")
    assert evaluation.not_measured == {"sample-100": why}
    assert f"sample-100: not measured on {data_dir / 'validation.h5'}: {why}" in capsys.readouterr().out
    assert [(r["row"], r["protocol"]) for r in evaluation.records] == [
        (row, p) for row in ("zero-shot", "clip-ft") for p in ("full", "full-all-views")]
    assert set(evaluation.summary["protocol"]) == {"full", "full-all-views"}
    json_path, md_path = write_results(evaluation, tmp_path / "reports")
    results = json.loads(json_path.read_text())
    assert results["protocols"] == ["full", "full-all-views"] and results["not_measured"] == {"sample-100": why}
    assert f"**sample-100 not measured**: {why}." in md_path.read_text()


@pytest.mark.parametrize("damage", ["fewer products", "other embedding width"])
def test_wrong_size_cache_is_named_and_recomputed(damage, evaluation_setup):
    """A cache whose arrays are whole but do not fit the split (or each other) is named in one warning and
    recomputed, never scored (a silent wrong number) nor a traceback."""
    from eiclip_core.model.checkpoint import checkpoint_id
    from eiclip_core.data import FashionGen
    from eiclip_core.pipeline.evaluate_command import evaluate_profile
    from eiclip_core.pipeline.profiles import get_profile

    data_dir, loads = evaluation_setup
    profile = get_profile("smoke", rows=("clip-ft",), seeds=(0,))
    evaluate_profile(profile, data_dir, device="cpu", seed=0)
    run = data_dir / "runs/clip-ft/seed0"
    path = data_dir / "cache" / f"emb-{cache_key({'checkpoint': checkpoint_id(run / 'final.pt')}, data_dir / 'validation.h5', 'cpu')}.npz"
    good = load_cached(path)
    n_prod = 10
    keep = good.image_product < n_prod
    bad = {"fewer products": Embeddings(good.image[keep], good.image_product[keep], good.first_view[:n_prod],
                                        good.text[:n_prod]),
           "other embedding width": Embeddings(good.image, good.image_product, good.first_view, good.text[:, :4])}
    save_cached(path, bad[damage])
    loads.clear()
    with pytest.warns(UserWarning, match=rf"{path}: unreadable embedding cache \(array \w+ has shape .*; recomputing it"):
        evaluate_profile(profile, data_dir, device="cpu", seed=0)
    assert loads == [str(run)]  # recomputed with the run's model
    split = FashionGen(data_dir / "validation.h5")
    again = load_cached(path)
    assert again.image.shape[0] == split.n_rows and again.text.shape[0] == len(split)
