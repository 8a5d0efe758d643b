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
