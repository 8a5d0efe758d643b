"""EI-CLIP model and loss: step 0 equals the backbone, rows are configs, each switch does what METHOD.md says."""
import copy
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

import eiclip_core  # noqa: F401
from eiclip_core.model.backbone import load_backbone
from eiclip_core.errors import KitError
from eiclip_core.model.loss import EICLIPLoss, entity_loss
from eiclip_core.model.config import ROWS, EIConfig, get_row
from eiclip_core.model.eiclip import build_dictionaries, build_eiclip, prompt_texts

TEXTS = ["black diesel bomber. relaxed-fit cotton jacket", "canada goose parka in navy", "slim fit tops by arrow",
         "wool blend trousers, tailored"]


@pytest.fixture(scope="module")
def artifact():
    values = {"brand": ["diesel", "canada goose", "arrow", "other"], "category": ["tops", "jackets", "other"],
              "fit": ["slim", "relaxed", "tailored", "other"]}
    prior = {t: np.arange(1, len(v) + 1, dtype=np.float64) / sum(range(1, len(v) + 1)) for t, v in values.items()}
    return SimpleNamespace(types=list(values), values=values, prior=prior)


_BASE = {}


def base_backbone():
    """One load per test module; each test works on a deep copy (loading takes seconds)."""
    if "b" not in _BASE:
        _BASE["b"] = load_backbone()
    return dataclasses.replace(_BASE["b"], model=copy.deepcopy(_BASE["b"].model))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return base_backbone().tokenizer(TEXTS), torch.randn(4, 3, 64, 64, generator=g)


def fresh(artifact, row="ei-clip", **overrides):
    backbone = base_backbone()
    cfg = EIConfig(**{**ROWS[row].to_dict(), **overrides})
    return build_eiclip(backbone, artifact, cfg), backbone


@pytest.mark.parametrize("row", list(ROWS))
def test_step0_features_equal_backbone_exactly(row, artifact, batch):
    model, backbone = fresh(artifact, row)
    tokens, images = batch
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), backbone.model.encode_text(tokens, normalize=True))
        assert torch.equal(model.encode_image(images), backbone.model.encode_image(images, normalize=True))


def test_image_side_switch_leaves_text_alone_and_starts_equal(artifact, batch):
    model, backbone = fresh(artifact, side="image")
    tokens, images = batch
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), backbone.model.encode_image(images, normalize=True))
        torch.nn.init.normal_(model.intervention.to_out.weight)
        assert torch.equal(model.encode_text(tokens), backbone.model.encode_text(tokens, normalize=True))
        assert not torch.equal(model.encode_image(images), backbone.model.encode_image(images, normalize=True))


def test_clip_ft_training_step_equals_plain_open_clip_step(artifact, batch):
    tokens, images = batch
    model, _ = fresh(artifact, "clip-ft")
    plain = base_backbone().model
    model.train(), plain.train()
    opt_a = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    opt_b = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    ids = torch.zeros(4, len(artifact.types), dtype=torch.long)
    EICLIPLoss(lambda_ent=0.5)(model(images, tokens), ids)["loss"].backward()
    ClipLoss()(plain.encode_image(images, normalize=True), plain.encode_text(tokens, normalize=True),
               plain.logit_scale.exp()).backward()
    opt_a.step(), opt_b.step()
    for (name, a), b in zip(model.clip.named_parameters(), plain.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("row", list(ROWS))
def test_each_row_trains_exactly_the_modules_its_switches_turn_on(row, artifact, batch):
    cfg = get_row(row)
    model, _ = fresh(artifact, row)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    expect = {"clip"} | ({"intervention"} if cfg.intervention else set()) \
        | ({"entity_embeddings", "entity_heads", "entity_logit_scale"} if cfg.ealm else set())
    assert trainable == expect  # D_t and log P_t never train
    if cfg.intervention:
        assert (model.intervention.select.proj is None) == (cfg.selection == "all")
    tokens, images = batch
    assert ("entity_logits" in model(images, tokens)) == cfg.ealm


def test_rows_are_configs_of_one_class_differing_only_in_switches():
    defaults = EIConfig().to_dict()
    changed = {row: {k for k, v in cfg.to_dict().items() if v != defaults[k]} for row, cfg in ROWS.items()}
    assert all(c <= {"intervention", "selection", "ealm"} for c in changed.values()), changed
    assert len({tuple(sorted(cfg.to_dict().items())) for cfg in ROWS.values()}) == len(ROWS)  # no two alike
    assert not (get_row("clip-ft").intervention or get_row("clip-ft").ealm)  # the baseline: plain fine-tuning
    copy_ = get_row("ei-clip")
    copy_.lambda_ent = 9.0
    assert ROWS["ei-clip"].lambda_ent == defaults["lambda_ent"]  # get_row hands out a copy
    with pytest.raises(KitError, match="unknown row"):
        get_row("nope")
    with pytest.raises(KitError, match="selection"):
        EIConfig(selection="sometimes")
    with pytest.raises(KitError, match="unknown field"):
        EIConfig.from_dict({"gates": "soft"})


def test_modules_present_only_where_the_row_needs_them(artifact):
    clip_ft, _ = fresh(artifact, "clip-ft")
    assert clip_ft.intervention is None and clip_ft.entity_embeddings is None
    ealm, _ = fresh(artifact, "ealm-only")
    assert ealm.intervention is None and set(ealm.entity_embeddings) == set(artifact.types)
    full, _ = fresh(artifact, "ei-clip")
    for t in artifact.types:  # E_t starts as D_t; D_t is frozen
        assert torch.equal(full.entity_embeddings[t], full.dictionaries[t])
        assert full.entity_embeddings[t].requires_grad and not full.dictionaries[t].requires_grad
    assert full.intervention.to_out.weight.abs().sum() == 0  # W_o = 0


def test_dictionaries_are_the_frozen_tower_on_the_prompts(artifact):
    model, backbone = fresh(artifact, prompt="typed")
    with torch.no_grad():
        expect = backbone.model.eval().encode_text(
            backbone.tokenizer(prompt_texts("brand", artifact.values["brand"], "typed")), normalize=True)
    assert prompt_texts("brand", ["diesel"], "typed") == ["brand: diesel"]
    assert torch.allclose(model.dictionaries["brand"], expect, atol=1e-6)
    assert torch.allclose(model.log_prior["fit"].exp(), torch.as_tensor(artifact.prior["fit"], dtype=torch.float32))


def test_dictionaries_are_remembered_for_the_same_weights_and_values_only(artifact, monkeypatch):
    backbone = base_backbone()
    clip, tokenizer, types = backbone.model, backbone.tokenizer, artifact.types
    first = build_dictionaries(clip, tokenizer, types, artifact.values)
    calls = []
    encode = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda *a, **k: calls.append(1) or encode(*a, **k))
    again = build_dictionaries(clip, tokenizer, types, artifact.values)
    assert not calls and all(torch.equal(first[t], again[t]) for t in types)
    again["brand"].add_(1.0)  # a caller's copy: changing it leaves the remembered D_t alone
    assert torch.equal(build_dictionaries(clip, tokenizer, types, artifact.values)["brand"], first["brand"])
    other_values = {**artifact.values, "fit": ["slim", "other"]}
    assert build_dictionaries(clip, tokenizer, types, other_values)["fit"].shape[0] == 2 and calls
    calls.clear()
    with torch.no_grad():
        next(clip.text.parameters()).add_(0.01)  # other weights: encoded anew, and they differ
    changed = build_dictionaries(clip, tokenizer, types, artifact.values)
    assert calls and not torch.equal(changed["brand"], first["brand"])


def test_dictionaries_are_reused_when_only_the_image_tower_or_logit_scale_differ(artifact, monkeypatch):
    """D_t depends on the text tower alone: the key holds exactly the entries encode_text reads."""
    from eiclip_core.model.dictionary_cache import text_tower_state

    backbone = base_backbone()
    clip, tokenizer, types = backbone.model, backbone.tokenizer, artifact.types
    assert set(text_tower_state(clip)) == {k for k in clip.state_dict() if k.startswith("text.")}
    first = build_dictionaries(clip, tokenizer, types, artifact.values)
    with torch.no_grad():
        next(clip.visual.parameters()).add_(0.5)  # as after fine-tuning, or another seed of a random tower
        clip.logit_scale.add_(1.0)
    calls = []
    encode = clip.encode_text
    monkeypatch.setattr(clip, "encode_text", lambda *a, **k: calls.append(1) or encode(*a, **k))
    again = build_dictionaries(clip, tokenizer, types, artifact.values)
    assert not calls and all(torch.equal(first[t], again[t]) for t in types)
    with torch.no_grad():
        clip.text.proj.weight[0].add_(1.0)  # the text projection is part of the tower: encoded anew
    assert not torch.equal(build_dictionaries(clip, tokenizer, types, artifact.values)["brand"], first["brand"])
    assert calls


def test_attention_is_prior_weighted_softmax(artifact, batch):
    model, _ = fresh(artifact, "cesm")
    tokens, _ = batch
    out = model.explain_text(tokens)
    iv = model.intervention
    with torch.no_grad():
        h = model.clip.encode_text(tokens)
        d = model.dictionaries["brand"]
        expect = ((iv.to_q(h) @ iv.to_k(d).T) / math.sqrt(iv.to_q.out_features)
                  + torch.log(torch.as_tensor(artifact.prior["brand"], dtype=torch.float32))).softmax(-1)
    assert torch.allclose(out["attention"]["brand"], expect, atol=1e-6)
    assert out["gates"].shape == (4, 3) and ((out["gates"] > 0) & (out["gates"] < 1)).all()


def test_gates_all_and_hard_top_k(artifact, batch):
    tokens, _ = batch
    all_model, _ = fresh(artifact, "intervention-all")
    assert torch.equal(all_model.explain_text(tokens)["gates"], torch.ones(4, 3))
    hard, _ = fresh(artifact, selection="hard", top_k=2)
    hard.train()
    torch.manual_seed(0)
    h = hard.clip.encode_text(tokens)
    g = hard.intervention.select(h)
    assert torch.equal(g.detach().sum(1), torch.full((4,), 2.0))
    assert set(g.detach().unique().tolist()) <= {0.0, 1.0}
    g.sum().backward()  # straight-through: the relaxed sigmoid passes gradient to W_s
    assert hard.intervention.select.proj.weight.grad.abs().sum() > 0


def test_residual_moves_text_features_once_w_o_is_trained(artifact, batch):
    model, backbone = fresh(artifact, "ei-clip")
    tokens, _ = batch
    with torch.no_grad():
        torch.nn.init.normal_(model.intervention.to_out.weight, std=0.1)
        assert not torch.equal(model.encode_text(tokens), backbone.model.encode_text(tokens, normalize=True))


def test_entity_loss_skips_missing_values():
    torch.manual_seed(0)
    logits = [torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 2)]
    ids = torch.tensor([[0, -1, -1], [4, 2, -1], [-1, 1, -1], [2, -1, -1]])
    expect = (F.cross_entropy(logits[0][[0, 1, 3]], ids[[0, 1, 3], 0])
              + F.cross_entropy(logits[1][[1, 2]], ids[[1, 2], 1])) / 2  # third type: no value, skipped
    assert torch.allclose(entity_loss(logits, ids), expect)
    assert entity_loss(logits, torch.full((4, 3), -1)).item() == 0.0


def test_forward_gives_entity_logits_and_the_loss_turns_them_into_l_ent(artifact, batch):
    tokens, images = batch
    model, _ = fresh(artifact, "ei-clip")
    out = model(images, tokens)
    assert [tuple(lg.shape) for lg in out["entity_logits"]] == [(4, len(artifact.values[t])) for t in model.types]
    with torch.no_grad():  # section 6: u_t(v) . normalise(E_t)^T / tau_e, from the normalised image feature
        expect = model.entity_heads["fit"](out["image_features"]) @ F.normalize(model.entity_embeddings["fit"]).T
    assert torch.allclose(out["entity_logits"][2], expect / model.cfg.tau_e, atol=1e-5)
    ids = torch.tensor([[0, 1, 1], [1, -1, 0], [2, 0, 2], [-1, 1, 3]])
    losses = EICLIPLoss(lambda_ent=0.5)(out, ids)
    assert torch.equal(losses["loss_ent"], entity_loss(out["entity_logits"], ids))
    with pytest.raises(KitError, match="value ids"):
        EICLIPLoss()(out)
    clip_ft, _ = fresh(artifact, "clip-ft")
    assert EICLIPLoss()(clip_ft(images, tokens), ids)["loss_ent"].item() == 0.0


def _rank_losses(rank: int, world: int, init_file: str, inputs: dict, out_dir: str):
    """One rank of test_entity_and_contrastive_losses_under_two_ranks: its rows, its losses, their grads."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    per = len(inputs["ids"]) // world
    mine = lambda t: t[rank * per:(rank + 1) * per].clone().requires_grad_(t.is_floating_point())  # noqa: E731
    out = {"image_features": mine(inputs["image"]), "text_features": mine(inputs["text"]),
           "logit_scale": inputs["scale"], "entity_logits": [mine(lg) for lg in inputs["logits"]]}
    losses = EICLIPLoss(0.5, rank=rank, world_size=world)(out, mine(inputs["ids"]))
    losses["loss"].backward()
    grads = {"image": out["image_features"].grad, "logits": [lg.grad for lg in out["entity_logits"]]}
    torch.save({**{k: v.detach() for k, v in losses.items()}, **grads}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_entity_and_contrastive_losses_under_two_ranks_equal_one_process(tmp_path):
    """Each rank scores its half of the batch; the mean of the ranks' losses and gradients (what DDP
    averages) is the one-process loss and gradient, although the ranks hold different numbers of labels."""
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(16, 16, generator=g))
    inputs = {"image": features[:8], "text": features[8:],
              "scale": torch.tensor(10.0), "logits": [torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)],
              # type 0: 3 labels on rank 0, 1 on rank 1; type 1: labels on rank 1 only
              "ids": torch.tensor([[0, -1], [4, -1], [2, -1], [-1, -1], [1, 2], [-1, 0], [-1, 1], [-1, -1]])}
    mp.spawn(_rank_losses, args=(2, str(tmp_path / "init"), inputs, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    image = inputs["image"].clone().requires_grad_()
    logits = [lg.clone().requires_grad_() for lg in inputs["logits"]]
    single = EICLIPLoss(0.5)({"image_features": image, "text_features": inputs["text"],
                              "logit_scale": inputs["scale"], "entity_logits": logits}, inputs["ids"])
    single["loss"].backward()
    for k in ("loss", "loss_itc", "loss_ent"):
        assert torch.allclose((ranks[0][k] + ranks[1][k]) / 2, single[k], atol=1e-6), k
    assert not torch.allclose(ranks[0]["loss_ent"], ranks[1]["loss_ent"])  # the ranks do differ
    assert torch.allclose(torch.cat([r["image"] for r in ranks]) / 2, image.grad, atol=1e-6)
    for t in range(2):
        assert torch.allclose(torch.cat([r["logits"][t] for r in ranks]) / 2, logits[t].grad, atol=1e-6)


def test_total_loss_and_temperature_clamp(artifact, batch):
    tokens, images = batch
    model, _ = fresh(artifact, "ei-clip", lambda_ent=0.25)
    ids = torch.tensor([[0, 1, 1], [1, -1, 0], [2, 0, 2], [-1, 1, 3]])
    losses = EICLIPLoss(lambda_ent=0.25)(model(images, tokens), ids)
    assert torch.allclose(losses["loss"], losses["loss_itc"] + 0.25 * losses["loss_ent"])
    losses["loss"].backward()
    assert model.entity_embeddings["brand"].grad is not None and model.entity_logit_scale.grad is not None
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0), model.entity_logit_scale.fill_(-1.0)
    model.clamp_scales()
    assert model.clip.logit_scale.item() == pytest.approx(math.log(100))
    assert model.entity_logit_scale.item() == 0.0


@pytest.mark.parametrize("kind", ["CustomTextCLIP", "CLIP"])
def test_text_tower_state_leaves_out_only_what_encode_text_never_reads(kind):
    """Every state-dict entry outside the D_t key (image tower, logit scale) may change without changing
    encode_text, for both open_clip model classes (eiclip-tiny's, and the paper's ViT-B-32 one, tiny here)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from eiclip_core.model.dictionary_cache import text_tower_state

    if kind == "CLIP":
        torch.manual_seed(0)
        clip = CLIP(embed_dim=8, vision_cfg=CLIPVisionCfg(layers=1, width=16, head_width=8, patch_size=8, image_size=16),
                    text_cfg=CLIPTextCfg(context_length=6, vocab_size=50, width=16, heads=2, layers=1)).eval()
        tokens = torch.randint(1, 50, (3, 6))
        expected = {"token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"}
    else:
        backbone = base_backbone()
        clip, tokens, expected = backbone.model.eval(), backbone.tokenizer(TEXTS), {"text"}
    kept = text_tower_state(clip)
    assert {k.split(".")[0] for k in kept} == expected
    with torch.no_grad():
        before = clip.encode_text(tokens)
        for name, value in clip.state_dict(keep_vars=True).items():
            if name not in kept:
                value.add_(torch.ones_like(value))
        assert torch.equal(clip.encode_text(tokens), before)
