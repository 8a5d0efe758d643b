"""Training: config validation, run directory, checkpoints (checksum, safe load), determinism,
exact resume after SIGKILL, numerical faults, and 2-process data parallelism (gloo)."""
import errno
import json
import math
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import eiclip_core  # noqa: F401
from eiclip_core.train import loop as T
from eiclip_core.model.checkpoint import checkpoint_id, checksum, latest_checkpoint, load_checkpoint, save_checkpoint
from eiclip_core.model.config import TrainConfig
from eiclip_core.train.distributed import DistInfo
from eiclip_core.errors import KitError
from eiclip_core.model.factory import load_run, zero_shot
from eiclip_core.train.loop import lr_factor, train

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The smoke data set (256 training products) and its mined entity artifact."""
    from eiclip_core.entities import mine_dataset
    from eiclip_core.pipeline.synth_command import generate_profile_data

    out = tmp_path_factory.mktemp("smoke")
    paths = generate_profile_data(out, "smoke", seed=0)
    mine_dataset(paths["train"], paths["validation"], out / "entities.json")
    return out


def cfg_for(data, out, **kw) -> TrainConfig:
    base = dict(train=str(data / "train.h5"), entities=str(data / "entities.json"), out=str(out), row="ei-clip",
                batch_size=32, max_steps=2, lr=1e-4, warmup_steps=1)
    return TrainConfig(**{**base, **kw})


def final_state(run_dir) -> dict:
    return torch.load(Path(run_dir) / "final.pt", weights_only=True)["payload"]["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def cli(args, **kw):
    return subprocess.Popen([PY, "-m", "eiclip_core.train", "--no-progress", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def flags(cfg: TrainConfig) -> list:
    out = []
    for k, v in cfg.to_dict().items():
        if k != "model":
            out += ["--" + k.replace("_", "-"), str(v)]
    return out


# ------------------------------------------------------------------------------------------ config


def test_config_rejects_unknown_wrong_and_out_of_range_fields(tmp_path):
    with pytest.raises(KitError, match="unknown field"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(KitError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(KitError, match="lr"):
        TrainConfig.from_dict({"lr": -1.0})
    with pytest.raises(KitError, match="should be of type int"):
        TrainConfig.from_dict({"epochs": "3"})
    with pytest.raises(KitError, match="unknown field"):
        TrainConfig(model={"gate": "soft"})
    with pytest.raises(KitError, match="unknown row"):
        TrainConfig(row="clip")
    cfg = TrainConfig(row="cesm", model={"prompt": "typed"}, seed=3)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.ei_config().prompt == "typed" and cfg.ei_config().selection == "soft"
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"train": "x.h5", "warmup": 3}))
    proc = cli(["--config", str(bad)])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith(f"error: {bad}: unknown field(s) warmup")


def test_lr_warms_up_then_follows_a_cosine():
    assert lr_factor(0, 10, 110) == pytest.approx(0.1)
    assert lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, 10, 110) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------- checkpoints


def test_corrupt_checkpoint_is_detected_and_the_previous_one_used(tmp_path):
    older = save_checkpoint(tmp_path / "step_1.pt", {"step": 1, "w": torch.arange(1000.0)})
    time.sleep(0.01)
    newer = save_checkpoint(tmp_path / "step_2.pt", {"step": 2, "w": torch.arange(1000.0) * 2})
    blob = bytearray(newer.read_bytes())
    i = blob.find(torch.tensor([2.0 * 500]).numpy().tobytes())  # a value inside the tensor data
    blob[i] ^= 0xFF
    newer.write_bytes(bytes(blob))
    os.utime(newer, ns=(time.time_ns(), time.time_ns()))
    with pytest.raises(KitError, match="checksum"):
        load_checkpoint(newer)
    with pytest.warns(UserWarning, match="step_2.pt"):
        path, payload = latest_checkpoint(tmp_path)
    assert path == older and payload["step"] == 1
    newer.write_bytes(newer.read_bytes()[:100])  # truncated
    with pytest.raises(KitError, match="corrupt"):
        load_checkpoint(newer)


def test_checkpoint_id_follows_the_content_not_the_file(tmp_path):
    payload = {"step": 3, "model": {"w": torch.arange(10.0)}}
    a = save_checkpoint(tmp_path / "a" / "final.pt", payload)
    b = tmp_path / "b.pt"
    torch.save(torch.load(a, weights_only=True), b)  # the same record; torch names the zip's records after the file
    assert a.read_bytes() != b.read_bytes()
    assert checkpoint_id(a) == checkpoint_id(b)
    c = save_checkpoint(tmp_path / "c.pt", {"step": 3, "model": {"w": torch.arange(10.0) + 1e-6}})
    assert checkpoint_id(c) != checkpoint_id(a)


def test_checkpoints_refuse_pickled_code(tmp_path):
    evil = tmp_path / "step_1.pt"
    torch.save({"format": 1, "payload": {"f": print}, "sha256": ""}, evil)
    with pytest.raises(KitError, match="corrupt"):
        load_checkpoint(evil)


# -------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def run_a(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "a"
    return train(cfg_for(data, out, checkpoint_every=1), progress=False)


@pytest.mark.slow  # uses run_a, a real training run
def test_run_directory_and_safe_loading(run_a, data):
    saved = json.loads((run_a / "config.json").read_text())
    from eiclip_core.entities import load_artifact

    assert saved["entity_artifact_id"] == load_artifact(data / "entities.json").id
    assert saved["git_revision"] and saved["config"]["row"] == "ei-clip" and saved["ei_config"]["ealm"]
    lines = (run_a / "log.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss,loss_itc,loss_ent,lr,logit_scale,samples_per_s" and len(lines) == 3
    done = json.loads((run_a / "done.json").read_text())
    assert done["steps"] == 2 and done["device"] == "cpu"
    assert not (run_a / "checkpoints" / "step_2.pt").exists()  # the last step leaves final.pt, no resume point
    ckpt = torch.load(run_a / "checkpoints" / "step_1.pt", weights_only=True)["payload"]
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "step", "epoch", "pos"} <= set(ckpt)
    model, backbone, cfg = load_run(run_a)
    assert cfg == cfg_for(data, run_a, checkpoint_every=1)
    assert_same_weights(model.state_dict(), final_state(run_a))
    tokens = backbone.tokenizer(["black slim-fit jeans"])
    gates = model.explain_text(tokens)["gates"]
    assert gates.shape == (1, 6)


@pytest.mark.slow  # run_a and three more training runs
def test_same_seed_same_weights_and_finished_run_is_reused(run_a, data, tmp_path):
    b = train(cfg_for(data, tmp_path / "b", checkpoint_every=1), progress=False)
    assert_same_weights(final_state(run_a), final_state(b))
    stamp = (b / "final.pt").stat().st_mtime_ns
    assert train(cfg_for(data, b, checkpoint_every=1), progress=False) == b  # done + same config: skipped
    assert (b / "final.pt").stat().st_mtime_ns == stamp
    with pytest.raises(KitError, match="already holds a run"):
        train(cfg_for(data, b, seed=1), progress=False)
    c = train(cfg_for(data, tmp_path / "c", seed=1), progress=False)
    assert not torch.equal(final_state(run_a)["clip.visual.proj"], final_state(c)["clip.visual.proj"])


def test_zero_shot_is_the_backbone(data):
    model, backbone = zero_shot(entities_path=data / "entities.json")
    tokens = backbone.tokenizer(["navy parka"])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), backbone.model.encode_text(tokens, normalize=True))


@pytest.mark.slow  # a training run, poisoned at its second step
def test_nan_loss_stops_with_step_products_and_checkpoint(data, tmp_path, monkeypatch):
    forward = T.EICLIPLoss.forward
    calls = {"n": 0}

    def poisoned(self, out, value_ids=None):
        losses = forward(self, out, value_ids)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(T.EICLIPLoss, "forward", poisoned)
    with pytest.raises(KitError, match=r"step 2: loss is nan .*products \[\d+.*step_1\.pt"):
        train(cfg_for(data, tmp_path / "nan", max_steps=3, checkpoint_every=1), progress=False)
    assert not (tmp_path / "nan" / "final.pt").exists()


# ------------------------------------------------------------------------------------- train_step


def prepared(data, cfg):
    from eiclip_core.entities import load_artifact

    return T.prepare(cfg, load_artifact(cfg.entities), DistInfo())


@pytest.mark.slow  # uses run_a, a real training run
def test_train_step_is_the_loops_first_step_bit_for_bit(run_a, data):
    cfg = cfg_for(data, run_a, checkpoint_every=1)
    state, training, loss_fn = prepared(data, cfg)
    losses = T.train_step(state, training.micro_batches(cfg, 0, 0, DistInfo()), loss_fn, cfg)
    assert (state.step, state.epoch, state.pos) == (1, 0, 1)
    logged = (run_a / "log.csv").read_text().splitlines()[1].split(",")
    assert [f"{losses[k]:.6f}" for k in T.LOSSES] + [f"{losses['lr']:.6g}"] == logged[2:6]
    # the whole resume point (weights, AdamW moments, schedule, scaler, RNG) equals the loop's checkpoint
    assert checksum(state.payload(cfg, world_size=1)) == checksum(load_checkpoint(run_a / "checkpoints" / "step_1.pt"))


@pytest.mark.slow  # four training steps on one batch of the smoke model
def test_train_step_lowers_the_loss_on_a_fixed_batch_and_stops_on_a_non_finite_one(data, tmp_path):
    cfg = cfg_for(data, tmp_path / "fixed", lr=1e-4, warmup_steps=0, max_steps=10, grad_clip=0.0)
    state, training, loss_fn = prepared(data, cfg)
    fixed = next(training.micro_batches(cfg, 0, 0, DistInfo()))
    losses = [T.train_step(state, iter([fixed]), loss_fn, cfg)["loss"] for _ in range(4)]
    assert losses[-1] < losses[0] - 0.1 and state.step == 4, losses
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    fixed.images[1] = float("nan")
    with pytest.raises(KitError, match=rf"step 5: loss is nan .*products \[{fixed.product_ids[0]}, .*checkpoint: none"):
        T.train_step(state, iter([fixed]), loss_fn, cfg)
    assert state.step == 4
    assert_same_weights(before, state.model.state_dict())  # no optimiser step on a non-finite loss
    with pytest.raises(KitError, match="1 micro-batches left, the step needs 2"):
        T.train_step(state, iter([fixed]), loss_fn, TrainConfig(**{**cfg.to_dict(), "accum_steps": 2}))


# --------------------------------------------------------------------------------- kill and resume


def _wait_for_step(run_dir: Path, proc, step: int, timeout: float = 600):
    log = run_dir / "log.csv"
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.stderr.read()
        if log.exists():
            rows = log.read_text().strip().splitlines()[1:]
            if rows and int(rows[-1].split(",")[0]) >= step:
                return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


@pytest.mark.slow
def test_sigkill_at_three_points_then_resume_is_bit_identical(data, tmp_path):
    # 256 products / 32 = 8 steps per epoch; 2 epochs stopped at step 11; checkpoints at 3, 6, 8 (epoch), 9.
    # Killed before the first checkpoint, mid-epoch, and while the epoch-end checkpoint is being written.
    kw = dict(epochs=2, max_steps=11, checkpoint_every=3, keep_checkpoints=2)
    whole = train(cfg_for(data, tmp_path / "whole", **kw), progress=False)
    killed = tmp_path / "killed"
    args = flags(cfg_for(data, killed, **kw))
    proc = cli(args)
    _wait_for_step(killed, proc, 1)  # before any checkpoint: the resumed run starts over
    proc.send_signal(signal.SIGKILL), proc.wait()
    proc = cli(args + ["--resume", "latest"])
    _wait_for_step(killed, proc, 4)  # mid-epoch, after the step-3 checkpoint
    proc.send_signal(signal.SIGKILL), proc.wait()
    proc = cli(args + ["--resume", "latest"])
    _wait_for_step(killed, proc, 8)  # the epoch-end checkpoint is being written right now
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL), proc.wait()
    assert not (killed / "done.json").exists()
    train(cfg_for(data, killed, **kw), resume="latest", progress=False)
    assert_same_weights(final_state(whole), final_state(killed))
    strip = lambda p: [r.rsplit(",", 1)[0] for r in (p / "log.csv").read_text().splitlines()]  # noqa: E731
    assert strip(whole) == strip(killed)  # same losses, lr, logit scale at every step (throughput differs)


# ------------------------------------------------------------------------------------- distributed


@pytest.mark.slow
def test_two_gloo_processes_first_loss_equals_single_process(data, tmp_path):
    single = train(cfg_for(data, tmp_path / "single", max_steps=1), progress=False)
    ddp = tmp_path / "ddp"
    torchrun = Path(PY).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "eiclip_core.train", "--no-progress",
         *flags(cfg_for(data, ddp, max_steps=1))],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = lambda p: (p / "log.csv").read_text().splitlines()[1].split(",")  # noqa: E731
    a, b = row(single), row(ddp)
    for col in (2, 3, 4):  # loss, loss_itc, loss_ent
        assert math.isclose(float(a[col]), float(b[col]), abs_tol=1e-5), (a, b)
    assert json.loads((ddp / "done.json").read_text())["world_size"] == 2


def _train_argv(data, out, *extra):
    return ["train", "--no-progress", "--train", str(data / "train.h5"), "--entities", str(data / "entities.json"),
            "--out", str(out), "--row", "clip-ft", "--batch-size", "16", "--max-steps", "1", *extra]


class _DiskFullAfter:
    """A file opened for writing on a disk that is full after `room` bytes (ENOSPC on the next write)."""

    def __init__(self, path, mode, room=4096):
        self.file, self.room = open(path, mode), room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def flush(self):
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_disk_full_at_a_checkpoint_is_one_line_and_the_run_is_not_finished(data, tmp_path, monkeypatch, capsys):
    """ENOSPC monkeypatched into the checkpoint's file: torch.save would turn it into a RuntimeError
    ("unexpected pos"); the command says "no space left on device" and names the file."""
    import eiclip_core.model.checkpoint

    monkeypatch.setattr(eiclip_core.model.checkpoint, "open", _DiskFullAfter, raising=False)
    out = tmp_path / "run"
    from eiclip_core.cli import main

    assert main(_train_argv(data, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.fullmatch(rf"error: {out}/\S+\.pt: cannot write here: no space left on device\n", err)
    assert not (out / "done.json").exists() and not list(out.glob("**/*.tmp"))


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "unknown device"])
def test_train_bad_out_or_device_is_one_line_exit_2(case, data, tmp_path, capsys):
    from eiclip_core.cli import main

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out, extra, problem = {
        "out is a file": (a_file, [], f"{a_file}: cannot write here: exists and is not a folder"),
        "out under a file": (a_file / "run", [], f"{a_file}/run: cannot write here: a part of this path is a file"),
        "unknown device": (tmp_path / "run", ["--device", "tpu"], "--device 'tpu': unknown device"),
    }[case]
    assert main(_train_argv(data, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
