"""Train one row of METHOD.md section 8 (CLIP-FT, EI-CLIP, ablations): single process or torchrun.

One process (CPU or one GPU):

    eiclip train --train data/smoke/train.h5 --entities data/smoke/entities.json \\
        --row ei-clip --out data/smoke/runs/ei-clip/seed0 --seed 0 --epochs 1 --batch-size 32

Data parallel, N processes on one machine (nccl on GPUs, gloo on CPU; --batch-size is the global
contrastive batch, split across ranks, features gathered for the loss):

    torchrun --standalone --nproc_per_node 4 -m eiclip_core.train.loop --train ... --out ...

Resume a killed run where it stopped (model, optimiser, schedule, scaler, data position, RNG):

    eiclip train ... --out data/smoke/runs/ei-clip/seed0 --resume latest

Validation recall in log.csv every N steps (full protocol, rank 0; eiclip_core/train/validation.py):

    eiclip train ... --val data/smoke/validation.h5 --eval-every 2

The run directory (config.json, log.csv, checkpoints/, final.pt, done.json) is run_directory.py's;
the training split as the loop reads it is data.py's.
Recipe defaults follow METHOD.md section 9 (AdamW, cosine with warm-up, mixed precision on GPU).
`RunState` holds what a run changes and a checkpoint stores; `train_step` is one optimiser step;
`train_loop` reads top to bottom: epochs of steps, a log row per step, checkpoints.
"""
import argparse
import itertools
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from eiclip_core.train import distributed as D
from eiclip_core.model.backbone import load_backbone
from eiclip_core.model.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from eiclip_core.model.config import TrainConfig
from eiclip_core.errors import KitError
from eiclip_core.io import read_json_object
from eiclip_core.model.loss import EICLIPLoss
from eiclip_core.model.eiclip import EICLIP, build_eiclip
from eiclip_core.train.run_directory import RESUME_MAY_DIFFER, RunDirectory, run_record
from eiclip_core.train.data import MicroBatch, TrainingData
from eiclip_core.train.validation import is_eval_step

LOSSES = ("loss", "loss_itc", "loss_ent")


# --------------------------------------------------------------------------------------------- recipe


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total` (sec. 9)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: EICLIP, weight_decay: float, lr: float, new_module_lr_scale: float = 1.0) -> list:
    """AdamW groups: the backbone (model.clip) at `lr`, the modules EI-CLIP adds to it (intervention, CESM,
    EALM) at lr x new_module_lr_scale; in each, decay on matrices only, gains, biases and temperatures
    exempt (as in open_clip_train). Empty groups are left out (CLIP-FT adds no module); the first group
    is the backbone's matrices, whose lr the log shows. The schedule scales every group's lr alike."""
    backbone = {id(p) for p in model.clip.parameters()}
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decay = p.ndim >= 2 and "logit_scale" not in name
            groups.setdefault((id(p) not in backbone, decay), []).append(p)
    return [{"params": groups[new, decay], "weight_decay": weight_decay if decay else 0.0,
             "lr": lr * new_module_lr_scale if new else lr}
            for new, decay in ((False, True), (False, False), (True, True), (True, False)) if (new, decay) in groups]


def autocast_dtype(precision: str, device: torch.device):
    """None = fp32. CPU always trains in fp32 (bf16 autocast is slower than fp32 on CPUs without native bf16
    arithmetic; fp16 autocast is unsupported on CPU)."""
    if device.type != "cuda":
        if precision not in ("auto", "fp32"):
            raise KitError(f"train config: precision={precision!r} needs a CUDA device (CPU trains in fp32)")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# ---------------------------------------------------------------------------------------------- state


@dataclass
class RunState:
    """Everything that changes while a run trains, and all a resumed run needs (after open_clip_train's
    TrainState): model, optimiser, schedule, loss scaler and the position in the data."""

    model: EICLIP
    ddp: torch.nn.Module  # the model as trained: DistributedDataParallel under torchrun, else the model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype] = None  # autocast dtype, None = fp32 (follows the config; not saved)
    step: int = 0  # optimiser steps done
    epoch: int = 0  # current epoch
    pos: int = 0  # optimiser steps done in the current epoch
    last_checkpoint: Optional[Path] = None  # named when a step fails
    resumed_from: Optional[Path] = None  # the checkpoint this attempt started from (done.json)

    @classmethod
    def create(cls, cfg: TrainConfig, model: EICLIP, total_steps: int, dist_info: D.DistInfo) -> "RunState":
        """Step 0: AdamW, warm-up then cosine, a loss scaler for fp16 (sec. 9), DDP under torchrun."""
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr, cfg.new_module_lr_scale),
                                      lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total_steps))
        amp_dtype = autocast_dtype(cfg.precision, dist_info.device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        ddp = model
        if dist_info.world_size > 1:
            gpu = dist_info.device.type == "cuda"
            ddp = DistributedDataParallel(model, device_ids=[dist_info.device] if gpu else None)
        return cls(model, ddp, optimizer, scheduler, scaler, amp_dtype)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def payload(self, cfg: TrainConfig, world_size: int) -> dict:
        """The state as a checkpoint payload (a plain dict, nanoGPT style) with every rank's RNG state.
        A collective under torchrun: every rank calls it."""
        rng = D.rng_states(self.device, world_size)
        return {"step": self.step, "epoch": self.epoch, "pos": self.pos, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng, "config": cfg.to_dict()}

    def restore(self, payload: dict, rank: int) -> None:
        """Continue exactly where `payload` stopped, this rank's RNG included."""
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.step, self.epoch, self.pos = payload["step"], payload["epoch"], payload["pos"]
        D.set_rng_state(payload["rng"][rank], self.device)

    def resume(self, resume: str, run: RunDirectory, cfg: TrainConfig, rank: int) -> None:
        """Restore from `resume`: a checkpoint file, or "latest", the run's newest readable checkpoint
        (none yet: say so and start from step 0). A checkpoint of another config (RESUME_MAY_DIFFER aside)
        is refused naming the fields: it would continue another schedule or fail on other weights."""
        path, payload = (latest_checkpoint(run.checkpoints, "cpu") if resume == "latest"
                         else (Path(resume), load_checkpoint(resume, "cpu")))
        if payload is None:
            if rank == 0:
                print(f"{run.checkpoints}: no checkpoint found; training starts from step 0", file=sys.stderr)
            return
        saved, wanted = payload.get("config", {}), cfg.to_dict()
        keys = sorted((set(saved) | set(wanted)) - set(RESUME_MAY_DIFFER))
        changed = [f"{k} ({wanted.get(k)!r} here, {saved.get(k)!r} in the checkpoint)"
                   for k in keys if saved.get(k) != wanted.get(k)]
        if changed:
            raise KitError(f"{path}: checkpoint of another config, differing in {', '.join(changed)}")
        self.restore(payload, rank)
        self.last_checkpoint = self.resumed_from = path

    def save(self, run: RunDirectory, name: str, cfg: TrainConfig, dist_info: D.DistInfo) -> None:
        """Checkpoint to run.checkpoints/`name` (rank 0 writes and prunes old ones); every rank calls it."""
        payload = self.payload(cfg, dist_info.world_size)
        path = run.checkpoints / name
        if dist_info.is_main:
            save_checkpoint(path, payload)
            prune_checkpoints(run.checkpoints, cfg.keep_checkpoints)
        D.barrier(dist_info.world_size)
        self.last_checkpoint = path


# ----------------------------------------------------------------------------------------------- step


def train_step(state: RunState, micro_batches: Iterator[MicroBatch], loss_fn: EICLIPLoss,
               cfg: TrainConfig) -> dict:
    """One optimiser step over the next `cfg.accum_steps` micro-batches (open_clip_train's
    train_one_epoch body): forward under autocast, loss, scaled backward, a check that the mean loss
    is finite on every rank, gradient clipping, step, schedule, temperatures clamped.

    Returns the losses (LOSSES) averaged over micro-batches and ranks, and "lr", the step's learning rate.
    """
    sums = torch.zeros(len(LOSSES), device=state.device)
    n = 0
    for n, batch in enumerate(itertools.islice(micro_batches, cfg.accum_steps), 1):
        with torch.autocast(state.device.type, dtype=state.amp_dtype, enabled=state.amp_dtype is not None):
            losses = loss_fn(state.ddp(batch.images, batch.tokens), batch.value_ids)
        sums += torch.stack([losses[k].detach().float() for k in LOSSES])
        state.scaler.scale(losses["loss"] / cfg.accum_steps).backward()
    if n < cfg.accum_steps:
        raise KitError(f"step {state.step + 1}: {n} micro-batches left, the step needs {cfg.accum_steps}")
    mean = D.all_reduce_mean(sums / cfg.accum_steps, loss_fn.world_size)
    if not torch.isfinite(mean).all():
        raise KitError(f"step {state.step + 1}: loss is {mean[0].item()} (non-finite) on the batch of products "
                       f"{batch.product_ids.tolist()}; last good checkpoint: {state.last_checkpoint or 'none'}")
    if cfg.grad_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    lr = state.scheduler.get_last_lr()[0]
    state.scheduler.step()
    state.model.clamp_scales()
    state.step, state.pos = state.step + 1, state.pos + 1
    return {**dict(zip(LOSSES, mean.tolist())), "lr": lr}


# ----------------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, resume: str = "", progress: bool = True) -> Path:
    """Train `cfg.row`, writing the run dir `cfg.out`; returns it. `resume`: "" | "latest" | a checkpoint."""
    if not cfg.train or not cfg.entities or not cfg.out:
        raise KitError("train config: train, entities and out are required")
    dist_info = D.init_distributed(cfg.device)
    try:
        with RunDirectory(cfg.out).lock() if dist_info.is_main else nullcontext():
            return _train(cfg, resume, progress, dist_info)
    finally:
        D.cleanup()


def prepare(cfg: TrainConfig, artifact, dist_info: D.DistInfo):
    """(RunState at step 0, TrainingData, EICLIPLoss) of `cfg` on this rank, the global RNG seeded for
    training: what `train` runs, and what a test needs to call `train_step` itself."""
    torch.manual_seed(cfg.seed)  # the backbone's random towers and the EI-CLIP modules start from the seed
    backbone = load_backbone(cfg.backbone, cfg.pretrained, device=dist_info.device, seed=cfg.seed)
    model = build_eiclip(backbone, artifact, cfg.ei_config()).train()
    data = TrainingData.build(cfg, backbone, artifact, model.types, dist_info.rank)
    state = RunState.create(cfg, model, data.total_steps, dist_info)
    loss_fn = EICLIPLoss(cfg.ei_config().lambda_ent, rank=dist_info.rank, world_size=dist_info.world_size)
    # training randomness (augmentation, hard Gumbel gates) differs per rank but is fixed by the seed
    torch.manual_seed(cfg.seed * 1000 + dist_info.rank)
    return state, data, loss_fn


def _train(cfg: TrainConfig, resume: str, progress: bool, dist_info: D.DistInfo) -> Path:
    """Reuse a finished run, or refuse, or (re)start one: prepare, resume, open the run directory, loop, finish."""
    # imported here so that `eiclip train --help` does not pay for the mining stack
    from eiclip_core.entities import load_artifact
    from eiclip_core.runtime import git_revision

    run = RunDirectory(cfg.out)
    artifact = load_artifact(cfg.entities)
    record = run_record(cfg, artifact.id)
    if run.is_done(record):
        return run.path
    if cfg.batch_size % dist_info.world_size:
        raise KitError(f"train config: batch_size={cfg.batch_size} not divisible by {dist_info.world_size} processes")
    run.check_can_start(record, resume)
    state, data, loss_fn = prepare(cfg, artifact, dist_info)
    if resume:
        state.resume(resume, run, cfg, dist_info.rank)
    if dist_info.is_main:
        run.open(record, state.step, {"git_revision": git_revision(), "world_size": dist_info.world_size})
    first_step, started = state.step, time.perf_counter()
    train_loop(state, data, loss_fn, run, cfg, dist_info, progress)
    seconds = time.perf_counter() - started
    if dist_info.is_main:
        samples = (state.step - first_step) * cfg.batch_size * cfg.accum_steps
        run.finish(final={"model": state.model.state_dict(), "config": cfg.to_dict(),
                          "ei_config": cfg.ei_config().to_dict(), "types": state.model.types, "step": state.step},
                   done={"device": str(dist_info.device), "world_size": dist_info.world_size,
                         "seconds": round(seconds, 2), "steps": state.step,
                         "samples_per_s": round(samples / seconds, 2) if seconds > 0 else None,
                         "resumed_from": state.resumed_from.name if state.resumed_from else None})
    D.barrier(dist_info.world_size)
    return run.path


def train_loop(state: RunState, data: TrainingData, loss_fn: EICLIPLoss, run: RunDirectory, cfg: TrainConfig,
               dist_info: D.DistInfo, progress: bool) -> None:
    """Epochs of optimiser steps from `state` on, logging each step (with the validation recall every
    `eval_every` steps and at the last, scored on rank 0 while the other ranks wait at the next step's
    collectives) and checkpointing every `checkpoint_every` steps and at each epoch end. The last step
    writes no resume checkpoint (a model and optimiser state of ~270 MB on the default backbone): the
    caller writes final.pt at once, and a finished run is reused, never resumed."""
    # disable only when asked; otherwise leave tqdm's default, which TQDM_DISABLE=1 can switch off
    quiet = {} if progress and dist_info.is_main else {"disable": True}
    bar = tqdm(total=data.total_steps, initial=state.step, desc=f"{cfg.row} seed{cfg.seed}", dynamic_ncols=True,
               **quiet)
    samples_per_step = cfg.batch_size * cfg.accum_steps
    while state.step < data.total_steps and state.epoch < cfg.epochs:
        micro_batches = data.micro_batches(cfg, state.epoch, state.pos, dist_info)
        t0 = time.perf_counter()
        while state.pos < data.steps_per_epoch and state.step < data.total_steps:
            losses = train_step(state, micro_batches, loss_fn, cfg)
            dt, t0 = time.perf_counter() - t0, time.perf_counter()
            val = None
            if data.validation is not None and is_eval_step(state.step, cfg.eval_every, data.total_steps):
                val = data.validation.recalls(state.model, state.device)
                t0 = time.perf_counter()  # throughput counts training, not evaluation
            if dist_info.is_main:
                run.append_log(state.step, state.epoch, losses, state.model.logit_scale.exp().item(),
                               samples_per_step / dt, val)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", epoch=state.epoch)
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
                    and state.pos < data.steps_per_epoch and state.step < data.total_steps):
                state.save(run, f"step_{state.step}.pt", cfg, dist_info)
                t0 = time.perf_counter()  # throughput counts training, not checkpoint writes
        if state.pos == data.steps_per_epoch:
            state.epoch, state.pos = state.epoch + 1, 0
            if state.step < data.total_steps and state.epoch < cfg.epochs:
                state.save(run, f"epoch_{state.epoch}.pt", cfg, dist_info)
    bar.close()


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
    done = read_json_object(out / "done.json", "run record")
    if os.environ.get("RANK", "0") == "0":
        print(f"{out}: {done['steps']} steps in {done['seconds']} s on {done['device']}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eiclip_core.train.loop", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
