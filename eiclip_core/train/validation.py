"""Validation recall during training: the full protocol (eiclip_core.evaluation.scoring.full_protocol: one
image per product, its first view, against one text per product) scored with the model being trained,
every `eval_every` optimiser steps and at the last, into the run's log.csv (run_directory.VAL_FIELDS).

The split is read once per run (`ValidationSplit.load`: the first views through the backbone's eval
preprocess, and every product's tokens), then held in memory: N x 3 x S x S float32 for the images
(600 products at 64 px: 29 MB; the real 32k-product split at 224 px would be about 19 GB, so the
paper profile leaves it off). Scoring encodes with evaluation's encode loop
(eiclip_core.evaluation.embeddings.encode_batches: the EICLIP model's encode_image / encode_text, so the
EI-CLIP rows' texts pass through the intervention, fp16 autocast on CUDA, batches of ENCODE_BATCH) on the
tensors in memory: no DataLoader and no progress bar, since the split is small and a DataLoader's
iterator would draw from the global RNG.
"""
import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from eiclip_core.evaluation.embeddings import ENCODE_BATCH, Embeddings, encode_batches
from eiclip_core.evaluation.scoring import full_protocol


def is_eval_step(step: int, eval_every: int, total_steps: int) -> bool:
    """Optimiser step `step` (1-based) is scored: every `eval_every`-th one and the run's last (0 = never)."""
    return bool(eval_every) and (step % eval_every == 0 or step == total_steps)


@contextlib.contextmanager
def rng_untouched(device: torch.device):
    """Run a block without moving the global RNG (CPU, and the CUDA device's): whatever the block draws,
    training afterwards draws exactly what it would have drawn without it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield


@dataclass
class ValidationSplit:
    """A validation split held in memory for scoring during training."""

    images: torch.Tensor  # (N, 3, S, S) first view of each product, eval preprocess
    tokens: torch.Tensor  # (N, L) one text per product
    product_ids: np.ndarray  # (N,)

    @classmethod
    def load(cls, split, backbone) -> "ValidationSplit":
        """`split`: an open FashionGen. Called in train.prepare before the training RNG is seeded (and the
        eval preprocess draws nothing anyway)."""
        from eiclip_core.data import EvalDataset

        dataset = EvalDataset(split, backbone.preprocess_val, views="first")
        texts = split.products["text"].tolist()
        images = torch.stack([dataset[k][0] for k in range(len(dataset))])
        tokens = torch.cat([backbone.tokenizer(texts[i:i + 4096]) for i in range(0, len(texts), 4096)])
        return cls(images, tokens, split.products["product_id"].to_numpy())

    @torch.no_grad()
    def recalls(self, model, device: torch.device) -> dict:
        """Full-protocol metrics (metrics.metric_keys, percent) of `model` (an EICLIP), which is put in
        eval mode for the encoding (no dropout, deterministic gates) and given back in its former mode."""
        was_training = model.training
        model.eval()
        try:
            with rng_untouched(device):
                image = encode_batches(model.encode_image, self.images.split(ENCODE_BATCH), device)
                text = encode_batches(model.encode_text, self.tokens.split(ENCODE_BATCH), device)
        finally:
            model.train(was_training)
        return full_protocol(Embeddings.one_view(image, text), self.product_ids)["metrics"]


def first_and_last(logs: pd.DataFrame) -> pd.DataFrame:
    """One row per run (row, seed) that was scored: its first and last evaluated step and validation mean
    recall there (first_step, first_mean, last_step, last_mean). `logs`: log.csv rows with `row` and
    `seed` columns added (notebook 03)."""
    scored = (logs if "val_mean" in logs else logs.assign(val_mean=float("nan"))).dropna(subset=["val_mean"])
    runs = scored.groupby(["row", "seed"], sort=False)[["step", "val_mean"]]
    first, last = runs.first().add_prefix("first_"), runs.last().add_prefix("last_")
    return first.join(last).rename(columns=lambda c: c.replace("val_mean", "mean")).reset_index()
