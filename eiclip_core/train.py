"""Train one row of METHOD.md section 8 (CLIP-FT, EI-CLIP, ablations): single process or torchrun.

One process (CPU or one GPU):

    eiclip train --train data/smoke/train.h5 --entities data/smoke/entities.json \\
        --row ei-clip --out data/smoke/runs/ei-clip/seed0 --seed 0 --epochs 1 --batch-size 32

Data parallel, N processes on one machine (nccl on GPUs, gloo on CPU; --batch-size is the global
contrastive batch, split across ranks, features gathered for the loss):

    torchrun --standalone --nproc_per_node 4 -m eiclip_core.train --train ... --out ...

Resume a killed run where it stopped (model, optimiser, schedule, scaler, data position, RNG):

    eiclip train ... --out data/smoke/runs/ei-clip/seed0 --resume latest

Run dir: config.json, log.csv, checkpoints/{epoch_<k>,step_<n>}.pt, final.pt, done.json.
Recipe defaults follow METHOD.md section 9 (AdamW, cosine with warm-up, mixed precision on GPU).
"""
import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from eiclip_core import distributed as D
from eiclip_core.backbone import load_backbone
from eiclip_core.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from eiclip_core.config import TrainConfig
from eiclip_core.errors import KitError
from eiclip_core.io import write_json, write_text
from eiclip_core.loss import EICLIPLoss
from eiclip_core.model import build_eiclip

LOG_FIELDS = ["step", "epoch", "loss", "loss_itc", "loss_ent", "lr", "logit_scale", "samples_per_s"]


# --------------------------------------------------------------------------------------------- helpers


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` (sec. 9)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list:
    """Decay matrices only; gains, biases and temperatures are exempt (as in open_clip_train)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def autocast_dtype(precision: str, device: torch.device):
    """None = fp32. CPU always trains in fp32 (bf16 autocast on CPU is slower here, fp16 unsupported)."""
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            raise KitError(f"train config: precision={precision!r} needs a CUDA device (CPU trains in fp32)")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def tokenize_all(tokenizer, texts: list, chunk: int = 4096) -> torch.Tensor:
    """Tokens of every product, computed once: (N, context_length) int64."""
    return torch.cat([tokenizer(texts[i:i + chunk]) for i in range(0, len(texts), chunk)])


def _value_id_matrix(artifact, types: list, n: int, product_ids: np.ndarray) -> torch.Tensor:
    """(N, |T|) value index per training product and type, -1 = missing (artifact order = file order)."""
    if not np.array_equal(np.asarray(artifact.product_ids("train")), np.asarray(product_ids)):
        raise KitError(f"{artifact.path}: training product ids differ from the training file "
                       "(mine the entities from this file again)")
    ids = artifact.value_ids("train")
    return torch.from_numpy(np.stack([np.asarray(ids[t], dtype=np.int64) for t in types], axis=1))


def _read_log(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_log(path: Path, rows: list) -> None:
    lines = [",".join(LOG_FIELDS)] + [",".join(str(r[k]) for k in LOG_FIELDS) for r in rows]
    write_text(path, "\n".join(lines) + "\n")


def _append_log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(",".join(str(row[k]) for k in LOG_FIELDS) + "\n")


# ------------------------------------------------------------------------------------ run directories


def run_record(cfg: TrainConfig, artifact_id: str) -> dict:
    """config.json: the config plus what identifies the inputs (entity artifact id)."""
    return {"config": cfg.to_dict(), "ei_config": cfg.ei_config().to_dict(), "entity_artifact_id": artifact_id}


def is_done(run_dir, cfg: TrainConfig) -> bool:
    """A finished run (done.json) trained with exactly this config: reuse it instead of training again."""
    run_dir = Path(run_dir)
    if not (run_dir / "done.json").exists() or not (run_dir / "config.json").exists():
        return False
    saved = json.loads((run_dir / "config.json").read_text())
    return saved.get("config") == cfg.to_dict()


# ----------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, resume: str = "", progress: bool = True) -> Path:
    """Train `cfg.row`, writing the run dir `cfg.out`; returns it. `resume`: "" | "latest" | a checkpoint."""
    if not cfg.train or not cfg.entities or not cfg.out:
        raise KitError("train config: train, entities and out are required")
    dist_info = D.init_distributed(cfg.device)
    try:
        return _train(cfg, resume, progress, dist_info)
    finally:
        D.cleanup()


def _train(cfg: TrainConfig, resume: str, progress: bool, dist_info: D.DistInfo) -> Path:
    # imported here so that `eiclip train --help` does not pay for the data and mining stacks
    from eiclip_core.data import FashionGen, TrainDataset
    from eiclip_core.entities import load_artifact
    from eiclip_core.runtime import git_revision

    rank, world, device = dist_info.rank, dist_info.world_size, dist_info.device
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    if is_done(out, cfg):
        return out
    if cfg.batch_size % world:
        raise KitError(f"train config: batch_size={cfg.batch_size} not divisible by {world} processes")

    artifact = load_artifact(cfg.entities)
    data = FashionGen(cfg.train)
    record = run_record(cfg, artifact.id)

    # run directory: a new run never overwrites another one; a resumed run must have the same config
    if (out / "config.json").exists():
        saved = json.loads((out / "config.json").read_text())
        if not resume:
            raise KitError(f"{out}: run directory already holds a run (pass --resume latest, or another --out)")
        if {k: saved.get(k) for k in record} != record:
            raise KitError(f"{out / 'config.json'}: config differs from this run's; resume needs the same config")

    # model: backbone (seeded init of random towers) + EI-CLIP modules on top
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg.backbone, cfg.pretrained, device=device, seed=cfg.seed)
    ei_cfg = cfg.ei_config()
    model = build_eiclip(backbone, artifact, ei_cfg)
    model.train()

    tokens = tokenize_all(backbone.tokenizer, data.products["text"].tolist())  # (N, L)
    value_ids = _value_id_matrix(artifact, model.types, len(data), data.products["product_id"].to_numpy())
    product_ids = data.products["product_id"].to_numpy()
    dataset = TrainDataset(data, transform=backbone.preprocess_train, seed=cfg.seed)

    n_micro_per_epoch = len(data) // cfg.batch_size
    steps_per_epoch = n_micro_per_epoch // cfg.accum_steps
    if steps_per_epoch < 1:
        raise KitError(f"{cfg.train}: {len(data)} products are fewer than one optimiser step "
                       f"({cfg.batch_size} x {cfg.accum_steps})")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total_steps))
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = EICLIPLoss(ei_cfg.lambda_ent, rank=rank, world_size=world)
    ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model

    # training randomness (hard Gumbel gates) differs per rank but is fixed by the seed
    torch.manual_seed(cfg.seed * 1000 + rank)
    step, epoch, pos = 0, 0, 0  # optimiser steps done; current epoch; optimiser steps done in it
    last_ckpt = None
    if resume:
        path, payload = (latest_checkpoint(ckpt_dir, "cpu") if resume == "latest"
                         else (Path(resume), load_checkpoint(resume, "cpu")))
        if payload is not None:
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            scaler.load_state_dict(payload["scaler"])
            step, epoch, pos = payload["step"], payload["epoch"], payload["pos"]
            set_rng_state(payload["rng"][rank], device)
            last_ckpt = path
    log_path = out / "log.csv"
    if rank == 0:
        for stale in ckpt_dir.glob(".*.tmp"):  # half-written checkpoints of a killed attempt
            stale.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {**record, "git_revision": git_revision(), "world_size": world})
        # rows after the checkpoint belong to the killed attempt; they will be written again
        _write_log(log_path, [r for r in _read_log(log_path) if int(r["step"]) <= step])

    def checkpoint(name: str) -> Path:
        states = [None] * world
        if world > 1:
            torch.distributed.all_gather_object(states, rng_state(device))
        else:
            states = [rng_state(device)]
        path = ckpt_dir / name
        if rank == 0:
            save_checkpoint(path, {
                "step": step, "epoch": epoch, "pos": pos, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": states, "config": cfg.to_dict()})
            prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        D.barrier(world)
        return path

    started = time.perf_counter()
    trained_samples = 0
    # disable only when asked; otherwise leave tqdm's default, which TQDM_DISABLE=1 can switch off
    quiet = {} if progress and rank == 0 else {"disable": True}
    bar = tqdm(total=total_steps, initial=step, desc=f"{cfg.row} seed{cfg.seed}", dynamic_ncols=True, **quiet)
    while step < total_steps and epoch < cfg.epochs:
        dataset.set_epoch(epoch)
        batches = D.epoch_batches(len(data), cfg.batch_size, cfg.seed, epoch)[: steps_per_epoch * cfg.accum_steps]
        local = [D.shard(b, rank, world).tolist() for b in batches[pos * cfg.accum_steps:]]
        # own generator: creating the iterator must not consume the global RNG (resume would diverge)
        loader = DataLoader(dataset, batch_sampler=local, num_workers=cfg.num_workers,
                            generator=torch.Generator().manual_seed(cfg.seed), pin_memory=device.type == "cuda")
        t0 = time.perf_counter()
        sums = torch.zeros(3, device=device)
        for micro, (images, idx) in enumerate(loader):
            images = images.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = ddp(images, tokens[idx].to(device), value_ids[idx].to(device), world_size=world)
                losses = loss_fn(outputs)
            sums += torch.stack([losses[k].detach().float() for k in ("loss", "loss_itc", "loss_ent")])
            scaler.scale(losses["loss"] / cfg.accum_steps).backward()
            if (micro + 1) % cfg.accum_steps:
                continue
            mean = D.all_reduce_mean(sums / cfg.accum_steps, world)
            if not torch.isfinite(mean).all():
                raise KitError(f"step {step + 1}: loss is {mean[0].item()} (non-finite) on the batch of products "
                               f"{product_ids[idx.numpy()].tolist()}; last good checkpoint: {last_ckpt or 'none'}")
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            model.clamp_scales()
            step, pos = step + 1, pos + 1
            dt, t0 = time.perf_counter() - t0, time.perf_counter()
            trained_samples += cfg.batch_size * cfg.accum_steps
            if rank == 0:
                _append_log(log_path, {
                    "step": step, "epoch": epoch, "loss": f"{mean[0].item():.6f}",
                    "loss_itc": f"{mean[1].item():.6f}", "loss_ent": f"{mean[2].item():.6f}", "lr": f"{lr:.6g}",
                    "logit_scale": f"{model.logit_scale.exp().item():.4f}",
                    "samples_per_s": f"{cfg.batch_size * cfg.accum_steps / dt:.2f}"})
            bar.update(1)
            bar.set_postfix(loss=f"{mean[0].item():.3f}", epoch=epoch)
            sums.zero_()
            if step >= total_steps:
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and pos < steps_per_epoch:
                last_ckpt = checkpoint(f"step_{step}.pt")
                t0 = time.perf_counter()  # throughput counts training, not checkpoint writes
        if pos >= steps_per_epoch:
            epoch, pos = epoch + 1, 0
            last_ckpt = checkpoint(f"epoch_{epoch}.pt")
    bar.close()
    if pos:  # stopped mid-epoch by max_steps: keep a resumable point too
        checkpoint(f"step_{step}.pt")
    seconds = time.perf_counter() - started
    if rank == 0:
        save_checkpoint(out / "final.pt", {"model": model.state_dict(), "config": cfg.to_dict(),
                                           "ei_config": ei_cfg.to_dict(), "types": model.types, "step": step})
        write_json(out / "done.json", {
            "device": str(device), "world_size": world, "seconds": round(seconds, 2), "steps": step,
            "samples_per_s": round(trained_samples / seconds, 2) if seconds > 0 else None,
            "resumed_from": str(last_ckpt.name) if resume and last_ckpt else None})
    D.barrier(world)
    return out


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type is dict:
            parser.add_argument(flag, type=json.loads, default=None, help=f"{f.name} as JSON, e.g. '{{\"prompt\": \"typed\"}}'")
        else:
            parser.add_argument(flag, type=f.type, default=None)
    parser.add_argument("--resume", default="", help="'latest' or a checkpoint file")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def config_from_args(args) -> TrainConfig:
    base = {}
    if args.config:
        path = Path(args.config)
        try:
            base = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise KitError(f"{path}: unreadable config ({type(e).__name__})") from e
        if not isinstance(base, dict):
            raise KitError(f"{path}: config must be a JSON object")
        base = base.get("config", base)  # a run's config.json works too
    flags = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig.from_dict({**base, **flags}, where=str(args.config or "train config"))


def run(args) -> int:
    cfg = config_from_args(args)
    out = train(cfg, resume=args.resume, progress=not args.no_progress)
    done = json.loads((out / "done.json").read_text())
    if os.environ.get("RANK", "0") == "0":
        print(f"{out}: {done['steps']} steps in {done['seconds']} s on {done['device']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eiclip_core.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
