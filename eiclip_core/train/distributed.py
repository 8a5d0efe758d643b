"""Data parallelism under torchrun: process group, device per rank, deterministic batch sharding.

Every rank builds the same global batches (a permutation seeded by (seed, epoch)) and takes its
contiguous slice, so N processes see exactly the global batches one process would see; the
contrastive loss then gathers features across ranks (open_clip's ClipLoss), which makes the first
step's loss equal to the single-process loss on the same global batch.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from eiclip_core.errors import KitError
from eiclip_core.runtime import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world_size <= 1:
        return DistInfo(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        t = t.clone()
        dist.all_reduce(t)
        t /= world_size
    return t


def rng_states(device: torch.device, world_size: int) -> list:
    """Every rank's global RNG state (CPU, and CUDA on a GPU), in rank order, on every rank.

    A collective under torchrun: all ranks call it (checkpoints store them all, so that each rank of a
    resumed run draws what it would have drawn).
    """
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if world_size == 1:
        return [state]
    states = [None] * world_size
    dist.all_gather_object(states, state)
    return states


def set_rng_state(state: dict, device: torch.device) -> None:
    """This rank's entry of `rng_states`, restored."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(n // batch_size, batch_size) product indices of one epoch's global batches; remainder dropped
    (contrastive batches keep one size). Depends only on (seed, epoch), never on the world size."""
    if n < batch_size:
        raise KitError(f"batch size {batch_size}: larger than the training set ({n} products)")
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)
    return order[: (n // batch_size) * batch_size].reshape(-1, batch_size)


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous slice of a global batch (ranks in order = the global batch)."""
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]
