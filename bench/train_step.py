"""Training throughput on this machine: CLIP-FT vs EI-CLIP, our loop vs open_clip's, FLOP/s vs peak.

    python bench/train_step.py                 # all figures (minutes on a 2-core CPU)
    python bench/train_step.py --steps 5 --skip-open-clip

Prints:
1. a measured fp32 matmul peak (GFLOP/s) of this machine;
2. per-step time and samples/s of one optimiser step (forward, backward, AdamW) of the default
   backbone as CLIP-FT and as EI-CLIP on the same batch (goal: EI-CLIP <= 1.10 x CLIP-FT per step),
   with FLOPs per step counted by torch's FlopCounterMode and the achieved share of the peak;
3. our training loop (`eiclip_core.train.loop.train`, CLIP-FT row, generated data) against open_clip's own
   loop (`open_clip_train.main --dataset-type synthetic`) on the same model and batch size
   (goal: ours >= 0.95 x open_clip's samples/s). Needs the bench extra (braceexpand, webdataset).
"""
import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import eiclip_core  # noqa: F401  (offline environment)
from eiclip_core.model.backbone import load_backbone
from eiclip_core.model.loss import EICLIPLoss
from eiclip_core.model.config import get_row
from eiclip_core.model.eiclip import build_eiclip

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best-of fp32 GFLOP/s of an n x n matmul: the practical peak of this CPU for dense layers."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fake_artifact(n_types: int = 6, n_values: int = 16):
    """Vocabulary sizes like the generated data's (6 types, ~10-20 values each)."""
    types = [f"type{i}" for i in range(n_types)]
    values = {t: [f"{t} value {j}" for j in range(n_values)] for t in types}
    prior = {t: np.full(n_values, 1 / n_values) for t in types}
    return SimpleNamespace(types=types, values=values, prior=prior)


def make_step(row: str, batch: int, artifact):
    """One optimiser step (forward, backward, AdamW) of the default backbone as `row`, on a fixed batch;
    returns (step function, FLOPs of forward + backward counted by FlopCounterMode)."""
    backbone = load_backbone()
    model = build_eiclip(backbone, artifact, get_row(row)).train()
    loss_fn = EICLIPLoss(get_row(row).lambda_ent)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 64, 64, generator=g)
    tokens = torch.randint(1000, 20000, (batch, backbone.context_length), generator=g)  # no padding: worst case
    ids = torch.randint(-1, 16, (batch, len(artifact.types)), generator=g)

    def step():
        losses = loss_fn(model(images, tokens), ids)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(images, tokens), ids)["loss"].backward()
    return step, counter.get_total_flops()


def model_step_figures(batch: int, steps: int, artifact) -> dict:
    """Median step time per row, the rows' steps interleaved so that load from other processes on a
    shared machine hits both alike."""
    rows = ("clip-ft", "ei-clip")
    made = {row: make_step(row, batch, artifact) for row in rows}
    times = {row: [] for row in rows}
    for _ in range(steps):
        for row in rows:
            times[row].append(_timed(made[row][0]))
    figs = {}
    for row in rows:
        t, flops = statistics.median(times[row]), made[row][1]
        figs[row] = {"row": row, "s_per_step": t, "samples_per_s": batch / t, "gflop_per_step": flops / 1e9,
                     "gflops": flops / t / 1e9}
    return figs


def our_loop(batch: int, steps: int, work: Path) -> float:
    """Median samples/s of our training loop (CLIP-FT) on generated data."""
    from eiclip_core.entities import mine_dataset
    from eiclip_core.pipeline.synth_command import generate_profile_data
    from eiclip_core.model.config import TrainConfig
    from eiclip_core.train.loop import train

    paths = generate_profile_data(work / "data", "smoke", seed=0)
    mine_dataset(paths["train"], paths["validation"], work / "data" / "entities.json")
    cfg = TrainConfig(train=str(paths["train"]), entities=str(work / "data" / "entities.json"),
                      out=str(work / "run"), row="clip-ft", batch_size=batch, max_steps=steps + 1,
                      epochs=10, warmup_steps=1, lr=1e-5)
    run = train(cfg, progress=False)
    rows = (run / "log.csv").read_text().splitlines()[2:]  # skip the warm-up step
    return statistics.median(float(r.split(",")[-1]) for r in rows)


def open_clip_loop(batch: int, steps: int, work: Path) -> float:
    """Median samples/s of open_clip_train.main on synthetic data, same model and batch size."""
    args = ["--dataset-type", "synthetic", "--train-num-samples", str(batch * (steps + 1)),
            "--batch-size", str(batch), "--model", "eiclip-tiny", "--epochs", "1", "--workers", "0",
            "--device", "cpu", "--precision", "fp32", "--lr", "1e-5", "--warmup", "1", "--grad-clip-norm", "1.0",
            "--log-every-n-steps", "1", "--logs", str(work / "logs"), "--name", "bench", "--save-frequency", "0",
            "--report-to", ""]
    proc = subprocess.run([sys.executable, __file__, "--open-clip-child", *args], cwd=ROOT,
                          capture_output=True, text=True)
    speeds = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.e+]+)/s,", proc.stdout + proc.stderr)]
    if proc.returncode != 0 or len(speeds) < 2:
        raise SystemExit(f"open_clip_train failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return statistics.median(speeds[1:])


def open_clip_child(argv: list) -> None:
    """open_clip_train.main with our model configs registered (importing eiclip_core.model.backbone does it)."""
    import eiclip_core.model.backbone  # noqa: F401
    from open_clip_train.main import main

    main(argv)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--open-clip-child":
        return open_clip_child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-open-clip", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"threads: {torch.get_num_threads()}, batch {args.batch_size}, backbone eiclip-tiny")
    peak = matmul_peak()
    print(f"matmul peak (fp32, 2048^2): {peak:.1f} GFLOP/s")
    artifact = fake_artifact()
    figs = model_step_figures(args.batch_size, args.steps, artifact)
    peak = max(peak, matmul_peak())  # measured before and after: other processes may share the CPU
    print(f"matmul peak, best of before/after: {peak:.1f} GFLOP/s")
    for f in figs.values():
        print(f"{f['row']:8s} {f['s_per_step']:.3f} s/step  {f['samples_per_s']:.1f} samples/s  "
              f"{f['gflop_per_step']:.1f} GFLOP/step (fwd+bwd)  {f['gflops']:.1f} GFLOP/s = "
              f"{100 * f['gflops'] / peak:.0f} % of peak")
    ratio = figs["ei-clip"]["s_per_step"] / figs["clip-ft"]["s_per_step"]
    print(f"EI-CLIP / CLIP-FT time per step: {ratio:.3f} (goal <= 1.10)")
    if args.skip_open_clip:
        return
    with tempfile.TemporaryDirectory() as tmp:
        ours = our_loop(args.batch_size, args.steps, Path(tmp))
        theirs = open_clip_loop(args.batch_size, args.steps, Path(tmp))
    print(f"our loop (clip-ft, generated data): {ours:.1f} samples/s; open_clip_train (synthetic): "
          f"{theirs:.1f} samples/s; ratio {ours / theirs:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
