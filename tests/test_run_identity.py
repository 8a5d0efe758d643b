"""Run identity: a finished run is reused only for the same config and the same inputs, a
run directory is trained in by one process at a time, a resume point must come from the same config,
done.json names the checkpoint resumed from, and an empty `--resume latest` says it starts over."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eiclip_core.model.config import TrainConfig
from eiclip_core.errors import KitError
from eiclip_core.io import file_identity
from eiclip_core.train.run_directory import RunDirectory
from eiclip_core.train.loop import train
from test_train import cfg_for as train_cfg_for, final_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke data set and its mined entity artifact; tests that change files copy it first."""
    from eiclip_core.entities import mine_dataset
    from eiclip_core.pipeline.synth_command import generate_profile_data

    out = tmp_path_factory.mktemp("smoke")
    paths = generate_profile_data(out, "smoke", seed=0)
    mine_dataset(paths["train"], paths["validation"], out / "entities.json", progress=False)
    return out


def cfg_for(data, out, **kw) -> TrainConfig:
    """test_train's config, at one step of 16 products (these tests look at run directories, not numbers)."""
    return train_cfg_for(data, out, **{"batch_size": 16, "max_steps": 1, **kw})


def test_a_run_is_done_only_with_its_config_model_and_done_record(tmp_path):
    """RunDirectory.is_done asks layout.run_finished, the test evaluation asks too: a run whose final.pt
    is missing (deleted, or killed between final.pt and done.json) is not finished, whatever done.json says."""
    from eiclip_core import layout
    from eiclip_core.io import write_json

    record = {"config": {"row": "clip-ft"}, "entity_artifact_id": "a", "train_identity": {"size": 1}}
    run = RunDirectory(tmp_path / "run")
    write_json(run.config_file, record)
    write_json(run.path / "done.json", {})
    assert not layout.run_finished(run.path) and not run.is_done(record)
    (run.path / "final.pt").write_bytes(b"model")
    assert layout.run_finished(run.path) and run.is_done(record)
    (run.path / "done.json").unlink()
    assert not run.is_done(record)


@pytest.mark.slow  # a training run and the entities mined again
def test_finished_run_from_other_inputs_is_refused_not_reused(smoke, tmp_path):
    from eiclip_core.entities import load_artifact, mine_dataset

    data = tmp_path / "data"
    shutil.copytree(smoke, data)
    run = train(cfg_for(data, tmp_path / "run"), progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["train_identity"] == file_identity(data / "train.h5")
    assert saved["entity_artifact_id"] == load_artifact(data / "entities.json").id
    stamp = (run / "final.pt").stat().st_mtime_ns
    assert train(cfg_for(data, run), progress=False) == run  # same config, same inputs: reused
    # entities mined again with other settings: another artifact, same config
    shutil.copy(data / "entities.json", tmp_path / "entities.orig.json")
    mine_dataset(data / "train.h5", data / "validation.h5", data / "entities.json", min_count=3, progress=False)
    assert load_artifact(data / "entities.json").id != saved["entity_artifact_id"]
    with pytest.raises(KitError, match=r"run: run directory holds a run made from other inputs "
                                       r"\(entity_artifact_id differ\); pass another --out or delete it"):
        train(cfg_for(data, run), progress=False)
    # the training file replaced (here: its mtime moved), the artifact as it was
    shutil.copy(tmp_path / "entities.orig.json", data / "entities.json")
    st = (data / "train.h5").stat()
    os.utime(data / "train.h5", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(KitError, match=r"other inputs \(train_identity differ\)"):
        train(cfg_for(data, run), progress=False)
    assert (run / "final.pt").stat().st_mtime_ns == stamp  # refused: nothing trained over it


@pytest.mark.slow  # two trainer processes
def test_second_process_on_a_locked_run_directory_gets_one_line(smoke, tmp_path):
    cfg = cfg_for(smoke, tmp_path / "run")
    args = [sys.executable, "-m", "eiclip_core.train", "--no-progress", "--train", cfg.train,
            "--entities", cfg.entities, "--out", cfg.out, "--row", cfg.row, "--batch-size", "16", "--max-steps", "1"]
    with RunDirectory(cfg.out).lock():  # this test process is the first trainer
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [
        f"error: {cfg.out}: run directory is in use by another process (pid {os.getpid()})"]
    assert not (tmp_path / "run" / "config.json").exists()
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)  # lock released
    assert first.returncode == 0, first.stderr[-2000:]
    with RunDirectory(cfg.out).lock():  # and released again when that process exited
        pass


@pytest.mark.slow  # two 2-step training runs
def test_resume_from_another_config_is_refused_and_done_names_the_checkpoint(smoke, tmp_path):
    base = train(cfg_for(smoke, tmp_path / "base", max_steps=2, checkpoint_every=1), progress=False)
    step_1 = base / "checkpoints" / "step_1.pt"
    with pytest.raises(KitError, match=r"step_1\.pt: checkpoint of another config, differing in "
                                       r"lr \(0\.5 here, 0\.0001 in the checkpoint\)$"):
        train(cfg_for(smoke, tmp_path / "lr", max_steps=2, lr=0.5), resume=str(step_1), progress=False)
    with pytest.raises(KitError, match=r"differing in .*row \('clip-ft' here, 'ei-clip' in the checkpoint\)"):
        train(cfg_for(smoke, tmp_path / "row", max_steps=2, row="clip-ft"), resume=str(step_1), progress=False)
    # the same config in another run directory resumes, and done.json names step_1.pt, not step_2.pt
    again = train(cfg_for(smoke, tmp_path / "again", max_steps=2, checkpoint_every=1), resume=str(step_1),
                  progress=False)
    assert json.loads((again / "done.json").read_text())["resumed_from"] == "step_1.pt"
    assert (again / "final.pt").exists() and not (again / "checkpoints" / "step_2.pt").exists()
    a, b = final_state(base), final_state(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_latest_without_a_checkpoint_says_it_starts_from_step_0(smoke, tmp_path, capsys):
    run = train(cfg_for(smoke, tmp_path / "run"), resume="latest", progress=False)
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints'}: no checkpoint found; training starts from step 0" in err.splitlines()
    assert json.loads((run / "done.json").read_text())["resumed_from"] is None


@pytest.fixture(scope="module")
def finished(smoke, tmp_path_factory):
    """A finished one-step CLIP-FT run on the smoke data; tests copy it before changing it."""
    return train(cfg_for(smoke, tmp_path_factory.mktemp("finished") / "run", row="clip-ft"), progress=False)


def _copy_run(finished, dest):
    """The finished run copied to `dest`, its recorded `out` following it (the one field naming the folder)."""
    shutil.copytree(finished, dest)
    record = json.loads((dest / "config.json").read_text())
    record["config"]["out"] = str(dest)
    (dest / "config.json").write_text(json.dumps(record))
    return dest


def _train_cli(smoke, run, capsys, *extra):
    """`eiclip train` with the flags of cfg_for(smoke, run) as a user types them: (exit status, stdout, stderr)."""
    from eiclip_core.cli import main
    from test_train import flags

    status = main(["train", "--no-progress", *flags(cfg_for(smoke, run, row="clip-ft")), *extra])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_finished_run_whose_model_was_deleted_is_not_reused(smoke, finished, tmp_path, capsys):
    """Without final.pt a run is not finished (layout.run_finished): `train` never prints the old step count
    as if it had reused it; it refuses in one line, and trains again from step 0 when asked to resume."""
    run = _copy_run(finished, tmp_path / "run")
    assert _train_cli(smoke, run, capsys)[0] == 0  # as it was: reused, nothing trained
    (run / "final.pt").unlink()
    status, out, err = _train_cli(smoke, run, capsys)
    assert (status, out) == (2, "") and err.count("\n") == 1, (out, err)
    assert err == f"error: {run}: run directory already holds a run (pass --resume latest, or another --out)\n"
    status, out, err = _train_cli(smoke, run, capsys, "--resume", "latest")
    assert status == 0 and f"{run / 'checkpoints'}: no checkpoint found; training starts from step 0" in err
    assert (run / "final.pt").is_file() and out.startswith(f"{run}: 1 steps in ")


@pytest.mark.parametrize("name", ["config.json", "done.json"])
@pytest.mark.parametrize("damage", ["{not json", "[1, 2]"])
def test_a_damaged_run_record_is_one_line_naming_the_file(name, damage, smoke, finished, tmp_path, capsys):
    """A run's config.json or done.json that is not a JSON object: `train` (and `evaluate`, which reads
    config.json) say so in one line naming the file, exit status 2, never a traceback."""
    from eiclip_core import layout
    from eiclip_core.cli import main

    data = tmp_path / "data"
    shutil.copytree(smoke, data)
    run = _copy_run(finished, layout.run_dir(data, "clip-ft", 0))
    (run / name).write_text(damage)
    what = "run config" if name == "config.json" else "run record"
    problem = f"{what} is not a JSON object" if damage.startswith("[") else f"unreadable {what}"
    status, out, err = _train_cli(smoke, run, capsys)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {run / name}: {problem}")
    if name == "config.json":
        assert main(["evaluate", "--profile", "smoke", "--data-dir", str(data), "--device", "cpu",
                     "--reports", str(tmp_path / "reports")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {run / name}: {problem}"), err


def test_a_final_model_without_its_fields_is_one_line(tmp_path):
    """final.pt holding an eiclip checkpoint that is not a run's model (a resume checkpoint copied over it,
    say): load_run names the file and the missing fields."""
    from eiclip_core.model.checkpoint import save_checkpoint
    from eiclip_core.model.factory import load_run

    save_checkpoint(tmp_path / "final.pt", {"config": {}, "step": 3})
    with pytest.raises(KitError, match=r"final\.pt: not a run's trained model \(no ei_config, model, types\)$"):
        load_run(tmp_path)


def test_resume_accepts_the_fields_that_leave_the_numbers_alone_and_names_the_others(tmp_path):
    """RESUME_MAY_DIFFER (validation file and interval, checkpoint interval and count, the folder) may change
    on resume; any other change is refused naming each field with its recorded and its new value."""
    from eiclip_core.io import write_json

    record = {"config": TrainConfig(lr=1e-4).to_dict(), "entity_artifact_id": "a", "train_identity": {"size": 1}}
    run = RunDirectory(tmp_path / "run")
    write_json(run.config_file, {**record, "git_revision": "x", "world_size": 1})
    safe = TrainConfig(lr=1e-4, val="validation.h5", eval_every=2, checkpoint_every=5, keep_checkpoints=3,
                       out=str(tmp_path / "moved")).to_dict()
    run.check_can_start({**record, "config": safe}, resume="latest")
    changed = {**record, "config": TrainConfig(lr=0.5, seed=3).to_dict()}
    with pytest.raises(KitError) as err:
        run.check_can_start(changed, resume="latest")
    assert str(err.value) == (f"{run.config_file}: resume needs the same config and inputs; this run differs in "
                              "lr (0.0001 recorded, 0.5 here), seed (0 recorded, 3 here)")
    with pytest.raises(KitError, match=r"differs in entity_artifact_id \('a' recorded, 'b' here\)$"):
        run.check_can_start({**record, "entity_artifact_id": "b"}, resume="latest")


@pytest.mark.slow  # a two-step run, then its second step again with validation
def test_a_run_resumes_with_validation_and_checkpointing_changed_to_the_same_weights(smoke, tmp_path):
    """Killed after its first checkpoint (here: its last step's files removed), a run resumed with validation
    switched on and another checkpoint interval continues from that checkpoint to the same weights."""
    base = train(cfg_for(smoke, tmp_path / "run", max_steps=2, checkpoint_every=1), progress=False)
    weights = final_state(base)
    (base / "final.pt").unlink()
    (base / "done.json").unlink()
    resumed = train(cfg_for(smoke, base, max_steps=2, checkpoint_every=2, eval_every=1,
                            val=str(smoke / "validation.h5")), resume="latest", progress=False)
    assert json.loads((resumed / "done.json").read_text())["resumed_from"] == "step_1.pt"
    again = final_state(resumed)
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    rows = (resumed / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_mean" in rows[0] and rows[2].split(",")[-1] != ""
