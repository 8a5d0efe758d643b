"""The training split as the training loop (loop.py) reads it: one contrastive batch per optimiser step (or
accum_steps micro-batches), in an order fixed by (seed, epoch) so that a resumed run and N processes
see what one uninterrupted process sees; and the validation split it scores (eiclip_core.train.validation)."""
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eiclip_core.train import distributed as D
from eiclip_core.model.config import TrainConfig
from eiclip_core.errors import KitError
from eiclip_core.train.validation import ValidationSplit


@dataclass
class MicroBatch:
    """One contrastive batch (this rank's slice of it) on the training device."""

    images: torch.Tensor  # (B, 3, S, S)
    tokens: torch.Tensor  # (B, L)
    value_ids: torch.Tensor  # (B, |T|) int64, -1 = missing; columns follow model.types
    product_ids: np.ndarray  # (B,) named in the error of a non-finite loss


@dataclass
class TrainingData:
    """The training split as the loop reads it: images through a DataLoader, text and labels precomputed."""

    dataset: Dataset  # data.TrainDataset: one random view per product and epoch
    tokens: torch.Tensor  # (N, L) every product's tokens, computed once
    value_ids: torch.Tensor  # (N, |T|) value index per product and type, -1 = missing
    product_ids: np.ndarray  # (N,)
    steps_per_epoch: int  # optimiser steps in one epoch (the last incomplete batch is dropped)
    total_steps: int  # optimiser steps of the run: all epochs, cut at max_steps
    validation: Optional[ValidationSplit] = None  # scored every cfg.eval_every steps, on rank 0 only

    @classmethod
    def build(cls, cfg: TrainConfig, backbone, artifact, types: list, rank: int = 0) -> "TrainingData":
        """The training split of `cfg`, and its validation split on rank 0 when the run evaluates (every
        rank opens that file, so that a bad one stops all of them with the same line)."""
        from eiclip_core.data import FashionGen, TrainDataset  # the data stack loads only to train

        data = FashionGen(cfg.train)
        val_split = FashionGen(cfg.val) if cfg.eval_every else None
        product_ids = data.products["product_id"].to_numpy()
        if not np.array_equal(np.asarray(artifact.product_ids("train")), product_ids):
            raise KitError(f"{artifact.path}: training product ids differ from the training file "
                           "(mine the entities from this file again)")
        ids = artifact.value_ids("train")  # in file order, as checked above
        value_ids = torch.from_numpy(np.stack([np.asarray(ids[t], dtype=np.int64) for t in types], axis=1))
        texts = data.products["text"].tolist()
        tokens = torch.cat([backbone.tokenizer(texts[i:i + 4096]) for i in range(0, len(texts), 4096)])
        steps_per_epoch = len(data) // cfg.batch_size // cfg.accum_steps
        if steps_per_epoch < 1:
            raise KitError(f"{cfg.train}: {len(data)} products are fewer than one optimiser step "
                           f"({cfg.batch_size} x {cfg.accum_steps})")
        total_steps = cfg.epochs * steps_per_epoch
        total_steps = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
        dataset = TrainDataset(data, transform=backbone.preprocess_train, seed=cfg.seed)
        validation = ValidationSplit.load(val_split, backbone) if val_split is not None and rank == 0 else None
        return cls(dataset, tokens, value_ids, product_ids, steps_per_epoch, total_steps, validation)

    def micro_batches(self, cfg: TrainConfig, epoch: int, pos: int, dist_info: D.DistInfo) -> Iterator[MicroBatch]:
        """This rank's micro-batches of `epoch` from optimiser step `pos` on, each loaded when asked for
        (augmentation and the hard gates draw from one global RNG, in the order of an unbroken run).

        The global batches depend only on (seed, epoch) (distributed.epoch_batches): a resumed run and
        N processes see what one uninterrupted process sees.
        """
        self.dataset.set_epoch(epoch)
        batches = D.epoch_batches(len(self.dataset), cfg.batch_size, cfg.seed, epoch)
        batches = batches[pos * cfg.accum_steps: self.steps_per_epoch * cfg.accum_steps]
        local = [D.shard(b, dist_info.rank, dist_info.world_size).tolist() for b in batches]
        device = dist_info.device
        # own generator: creating the iterator must not consume the global RNG (resume would diverge)
        loader = DataLoader(self.dataset, batch_sampler=local, num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed), pin_memory=device.type == "cuda")
        for images, idx in loader:
            yield MicroBatch(images.to(device, non_blocking=True), self.tokens[idx].to(device),
                             self.value_ids[idx].to(device), self.product_ids[idx.numpy()])
