"""`eiclip pretrain`: the general-domain tiny CLIP, trained LiT-style on the generated everyday corpus.

LiT (Zhai et al., CVPR 2022, "locked-image tuning" with the roles swapped here): the MiniLM text
tower is locked and its pooled features are computed once per distinct caption, so only the image
tower, the text projection and the logit scale learn. That makes a real, aligned, general-domain CLIP
in minutes on 2 CPU cores. Identical captions in a batch count as positives of each other.

    eiclip pretrain                       # the kit's default weights (reused when already made)
    eiclip pretrain --out w.pt --epochs 1 # another setting, written elsewhere

Output: one checkpoint (eiclip_core.model.checkpoint format) holding the image tower, the text projection
and the logit scale, plus `<name>.json` beside it: the config, its key, and held-out measures.
`load_backbone("eiclip-tiny")` loads these weights by default (eiclip_core.model.backbone).
"""
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eiclip_core.model.backbone import KIT_WEIGHTS
from eiclip_core.model.config import DEFAULT_BACKBONE, KitConfig
from eiclip_core.errors import KitError

DEFAULT_WEIGHTS = KIT_WEIGHTS[DEFAULT_BACKBONE]
TRAINED_PREFIXES = ("visual.", "text.proj.", "logit_scale")  # what pretraining changes (LiT)


@dataclass
class PretrainConfig(KitConfig):
    """Everything that decides the general backbone's weights (its key names the cached file)."""

    label = "pretrain config"

    backbone: str = DEFAULT_BACKBONE
    n_train: int = 12000  # general images (GENERAL_WORLD recipe: 12k at 64 px)
    n_heldout: int = 1000
    image_size: int = 64
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0

    def checks(self) -> dict:
        return {"n_train": self.n_train >= self.batch_size, "n_heldout": self.n_heldout >= 10,
                "image_size": 16 <= self.image_size <= 256, "epochs": self.epochs >= 1,
                "batch_size": self.batch_size >= 2, "lr": 0 < self.lr < 1, "weight_decay": self.weight_decay >= 0,
                "warmup_steps": self.warmup_steps >= 0, "seed": 0 <= self.seed < 2 ** 31}

    def key(self) -> str:
        """Identity of the weights this config makes (plus torch's version: kernels decide the bits)."""
        blob = json.dumps({**self.to_dict(), "torch": torch.__version__.split("+")[0]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- steps

def normalise_images(images: np.ndarray, mean, std) -> torch.Tensor:
    """(N, P, P, 3) uint8 -> (N, 3, P, P) float, as the backbone's preprocess does at its own size."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def pooled_text_features(clip, tokenizer, captions: list, batch_size: int = 256, progress: bool = True):
    """Locked-tower features of each distinct caption: (C, width) before the projection, and the
    caption -> row index of every input caption."""
    from tqdm.auto import tqdm

    distinct = sorted(set(captions))
    rows = {c: i for i, c in enumerate(distinct)}
    text = clip.text
    out = []
    for i in tqdm(range(0, len(distinct), batch_size), desc="text features", disable=not progress, leave=False):
        ids = tokenizer(distinct[i:i + batch_size])
        mask = (ids != text.config.pad_token_id).long()
        out.append(text.pooler(text.transformer(input_ids=ids, attention_mask=mask), mask))
    return torch.cat(out), torch.tensor([rows[c] for c in captions])


def lit_loss(image_features, text_features, caption_ids, logit_scale) -> torch.Tensor:
    """Symmetric InfoNCE where every column with the same caption is a positive (soft targets)."""
    logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def trainable_parameters(clip) -> list:
    """The image tower, the text projection and the logit scale; the text trunk stays locked."""
    params = []
    for name, p in clip.named_parameters():
        p.requires_grad_(name.startswith(TRAINED_PREFIXES))
        if p.requires_grad:
            params.append(p)
    return params



# ----------------------------------------------------------------------------------------- training

def pretrain(cfg: PretrainConfig, progress: bool = True):
    """Train the general backbone; returns (state dict of the trained parts, held-out measures)."""
    from tqdm.auto import tqdm

    from eiclip_core.model.backbone import RANDOM_INIT, load_backbone
    from eiclip_core.synth.general_corpus import make_corpus
    from eiclip_core.train.loop import lr_factor

    backbone = load_backbone(cfg.backbone, RANDOM_INIT, seed=cfg.seed)
    clip = backbone.model
    mean, std = clip.visual.image_mean, clip.visual.image_std
    corpus = make_corpus(cfg.n_train, cfg.image_size, cfg.seed, "train", progress)
    features, caption_ids = pooled_text_features(clip, backbone.tokenizer, corpus.captions, progress=progress)
    images = normalise_images(corpus.images, mean, std)
    params = trainable_parameters(clip)
    decay = [p for p in params if p.ndim >= 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = cfg.n_train // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total))
    generator = torch.Generator().manual_seed(cfg.seed)
    clip.train()
    bar = tqdm(total=total, desc="pretrain (general corpus)", disable=not progress)
    for _ in range(cfg.epochs):
        order = torch.randperm(cfg.n_train, generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            ids = caption_ids[idx]
            loss = lit_loss(clip.encode_image(images[idx]), clip.text.proj(features[ids]), ids,
                            clip.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    clip.eval()
    measures = heldout_measures(clip, backbone.tokenizer, cfg, progress)
    state = {k: v.detach().clone() for k, v in clip.state_dict().items() if k.startswith(TRAINED_PREFIXES)}
    return state, measures


@torch.no_grad()
def heldout_measures(clip, tokenizer, cfg: PretrainConfig, progress: bool = False) -> dict:
    """Zero-shot on the held-out draw: colour and thing (garment word or icon) by prompt, caption R@1."""
    from eiclip_core.synth.general_corpus import ALL_COLOURS, GARMENT_WORDS, ICON_WORDS, make_corpus

    corpus = make_corpus(cfg.n_heldout, cfg.image_size, cfg.seed, "heldout", progress)
    images = normalise_images(corpus.images, clip.visual.image_mean, clip.visual.image_std)
    image_features = F.normalize(torch.cat([clip.encode_image(b) for b in images.split(256)]), dim=-1)
    encode = lambda texts: F.normalize(clip.encode_text(tokenizer(texts)), dim=-1)  # noqa: E731
    things = {**{w: f"a photo of a {w}" for w in GARMENT_WORDS}, **{w: f"a drawing of a {w}" for w in ICON_WORDS}}
    shape = lambda word: GARMENT_WORDS.get(word, word)  # noqa: E731  synonyms share a silhouette
    colours = closest_prompt(image_features, encode, {c: f"something {c}" for c in ALL_COLOURS})
    nouns = closest_prompt(image_features, encode, things)
    captions = closest_prompt(image_features, encode, {c: c for c in sorted(set(corpus.captions))})
    share = lambda hits: round(float(np.mean(hits)), 4)  # noqa: E731
    return {
        "colour_accuracy": share([g == s.colour for g, s in zip(colours, corpus.scenes)]),
        "colour_chance": round(1 / len(ALL_COLOURS), 4),
        "shape_accuracy": share([shape(g) == s.shape for g, s in zip(nouns, corpus.scenes)]),
        "shape_chance": round(1 / len({shape(w) for w in things}), 4),
        "caption_r1": share([g == c for g, c in zip(captions, corpus.captions)]),
        "n_heldout": cfg.n_heldout,
    }


def closest_prompt(image_features, encode, prompts: dict) -> list:
    """For each image, the name of the prompt whose text feature is nearest."""
    names = list(prompts)
    text_features = torch.cat([encode(list(prompts.values())[i:i + 256]) for i in range(0, len(names), 256)])
    return [names[g] for g in (image_features @ text_features.T).argmax(dim=1).tolist()]


# ------------------------------------------------------------------------------------------- output

def manifest_path(weights) -> Path:
    return Path(weights).with_suffix(".json")


def is_made(weights, cfg: PretrainConfig) -> bool:
    """The weights file exists, verifies, and was made by exactly this config (its manifest's key)."""
    from eiclip_core.model.checkpoint import load_checkpoint

    manifest = manifest_path(weights)
    if not Path(weights).is_file() or not manifest.is_file():
        return False
    try:
        made = json.loads(manifest.read_text())
        return made.get("key") == cfg.key() and load_checkpoint(weights)["key"] == cfg.key()
    except (KitError, ValueError, KeyError):
        return False


def make_weights(cfg: PretrainConfig, weights=DEFAULT_WEIGHTS, progress: bool = True) -> dict:
    """Pretrain unless `weights` already holds this config's result; returns the manifest."""
    from eiclip_core.model.checkpoint import checkpoint_id, save_checkpoint
    from eiclip_core.io import write_json

    if is_made(weights, cfg):
        return json.loads(manifest_path(weights).read_text())
    started = time.perf_counter()
    state, measures = pretrain(cfg, progress)
    save_checkpoint(weights, {"model": state, "config": cfg.to_dict(), "key": cfg.key()})
    manifest = {"key": cfg.key(), "checkpoint_id": checkpoint_id(weights), "config": cfg.to_dict(),
                "torch": torch.__version__, "heldout": measures,
                "seconds": round(time.perf_counter() - started, 1),
                "made_by": "eiclip pretrain" + ("" if Path(weights) == DEFAULT_WEIGHTS else f" --out {weights}")}
    write_json(manifest_path(weights), manifest)
    return manifest


def add_arguments(parser) -> None:
    from dataclasses import fields

    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="weights file (default: the kit's own)")
    for f in fields(PretrainConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=f.type, default=None)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from dataclasses import fields

    cfg = PretrainConfig.from_dict({f.name: getattr(args, f.name) for f in fields(PretrainConfig)
                                    if getattr(args, f.name) is not None})
    manifest = make_weights(cfg, Path(args.out), progress=not args.no_progress)
    print(f"{args.out}: key {manifest['key']}, held-out {json.dumps(manifest['heldout'])}")
    return 0
