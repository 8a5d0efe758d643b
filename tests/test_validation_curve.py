"""Training that can be read: validation recall in log.csv every `eval_every` steps, which
leaves the training numbers and the resume behaviour alone, and the lr of the modules EI-CLIP adds."""
import csv
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from eiclip_core.model.config import TrainConfig
from eiclip_core.train.distributed import DistInfo
from eiclip_core.errors import KitError
from eiclip_core.io import write_json
from eiclip_core.train.run_directory import LOG_FIELDS, VAL_FIELDS
from eiclip_core.train.loop import lr_factor, train, train_step
from test_train import _train_argv, assert_same_weights, cfg_for, final_state, prepared
from test_train import data  # noqa: F401  (fixture: the smoke data set, 128 validation products, and its entities)


def evaluating(data, out, **kw) -> TrainConfig:
    """Three steps scored at steps 2 and 3 (every 2nd and the last); each step checkpointed, all kept."""
    return cfg_for(data, out, **{"max_steps": 3, "val": str(data / "validation.h5"), "eval_every": 2,
                                 "checkpoint_every": 1, "keep_checkpoints": 0, **kw})


def read_log(run_dir) -> list:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def numbers(rows: list) -> list:
    """The log without its throughput column (wall-clock, differs between runs)."""
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]


@pytest.fixture(scope="module")
def scored(data, tmp_path_factory):
    return train(evaluating(data, tmp_path_factory.mktemp("runs") / "scored"), progress=False)


def test_validation_columns_at_every_nth_and_the_last_step(scored):
    rows = read_log(scored)
    assert list(rows[0]) == LOG_FIELDS + VAL_FIELDS
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert all(r[k] == "" for k in VAL_FIELDS for r in rows[:1])
    for r in rows[1:]:
        val = {k: float(r[k]) for k in VAL_FIELDS}
        assert all(0 <= v <= 100 for v in val.values())
        assert val["val_mean"] == pytest.approx(np.mean([val[k] for k in VAL_FIELDS[:-1]]), abs=1e-3)


def test_last_validation_recall_is_evaluate_full_protocol_of_the_final_model(scored, data):
    """The loop's recall equals evaluation's "full" protocol on final.pt, encoded by extract_embeddings
    (for the EI-CLIP row its texts pass through the intervention there as here)."""
    from eiclip_core.data import FashionGen
    from eiclip_core.evaluation.embeddings import extract_embeddings
    from eiclip_core.evaluation.scoring import evaluate_embeddings
    from eiclip_core.model.factory import load_run

    model, backbone, _ = load_run(scored)
    split = FashionGen(data / "validation.h5")
    emb = extract_embeddings(model, backbone, split.path, "cpu")
    full = evaluate_embeddings(emb, split.products["product_id"].to_numpy(), split.products["subcategory"].to_numpy(),
                               protocols=("full",), bootstrap=100)["full"]["metrics"]
    last = read_log(scored)[-1]
    assert {k: float(last[k]) for k in VAL_FIELDS} == pytest.approx({k: full[k[4:]] for k in VAL_FIELDS}, abs=1e-4)


def test_evaluation_leaves_losses_and_weights_bit_identical(scored, data, tmp_path):
    """Same run with eval_every=0: the same losses, lr and logit scale at every step and the same weights,
    so scoring drew nothing from the global RNG and left the model as it was (train mode included)."""
    plain = train(evaluating(data, tmp_path / "plain", eval_every=0), progress=False)
    assert list(read_log(plain)[0]) == LOG_FIELDS  # a run that does not score logs the training columns alone
    assert numbers(read_log(plain)) == [{k: r[k] for k in LOG_FIELDS if k != "samples_per_s"}
                                        for r in read_log(scored)]
    assert_same_weights(final_state(scored), final_state(plain))


def test_resumed_run_writes_the_same_log_as_an_unbroken_one(scored, data, tmp_path):
    """A run killed after step 2 was logged (scored) but before its checkpoint: resumed from step_1.pt,
    the rows after step 1 are written again, validation recall included."""
    killed = tmp_path / "killed"
    shutil.copytree(scored, killed)
    assert not (killed / "checkpoints" / "step_3.pt").exists()  # the last step leaves final.pt only
    for name in ("final.pt", "done.json", "checkpoints/step_2.pt"):
        (killed / name).unlink()
    record = json.loads((killed / "config.json").read_text())
    write_json(killed / "config.json", {**record, "config": {**record["config"], "out": str(killed)}})  # moved
    lines = (killed / "log.csv").read_text().splitlines(keepends=True)
    (killed / "log.csv").write_text("".join(lines[:3]).replace(lines[2].split(",")[2], "9.999999"))  # step 2 garbled
    train(evaluating(data, killed), resume="latest", progress=False)
    assert numbers(read_log(killed)) == numbers(read_log(scored))
    assert_same_weights(final_state(scored), final_state(killed))


# ----------------------------------------------------------------------------------- learning rates


def test_new_modules_train_at_scaled_lr_with_the_same_schedule(data, tmp_path):
    cfg = cfg_for(data, tmp_path / "lr", new_module_lr_scale=10.0, warmup_steps=2, max_steps=4)
    state, training, loss_fn = prepared(data, cfg)
    model, groups = state.model, state.optimizer.param_groups
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter in exactly one group
    backbone = {id(p) for p in model.clip.parameters()}
    for g in groups:
        new = {id(p) not in backbone for p in g["params"]}
        decay = {p.ndim >= 2 and "logit_scale" not in trainable[id(p)] for p in g["params"]}
        assert len(new) == len(decay) == 1, "a group mixes backbone and new modules, or decay and no decay"
        assert g["initial_lr"] == pytest.approx(1e-3 if new == {True} else 1e-4, rel=1e-12)
        assert g["weight_decay"] == (cfg.weight_decay if decay == {True} else 0.0)
    names = {trainable[i] for g in groups[2:] for i in map(id, g["params"])}
    assert any(n.startswith("intervention.") for n in names) and "entity_logit_scale" in names
    for step in range(2):  # warm-up then cosine, the same factor for every group
        assert [g["lr"] for g in groups] == pytest.approx(
            [g["initial_lr"] * lr_factor(step, 2, training.total_steps) for g in groups])
        train_step(state, training.micro_batches(cfg, 0, step, DistInfo()), loss_fn, cfg)

    clip_ft, _, _ = prepared(data, cfg_for(data, tmp_path / "ft", row="clip-ft", new_module_lr_scale=10.0))
    assert [g["initial_lr"] for g in clip_ft.optimizer.param_groups] == [1e-4, 1e-4]  # nothing added to the backbone
    with pytest.raises(KitError, match=re.escape("new_module_lr_scale=0.0 out of range")):
        TrainConfig(new_module_lr_scale=0.0)


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("case", ["missing", "not hdf5", "no val"])
def test_bad_validation_file_is_one_line_before_training(case, data, tmp_path, capsys):
    from eiclip_core.cli import main

    junk = tmp_path / "junk.h5"
    junk.write_text("not an HDF5 file")
    missing = tmp_path / "missing.h5"
    extra, problem = {
        "missing": (["--val", str(missing), "--eval-every", "1"], f"{missing}: file not found"),
        "not hdf5": (["--val", str(junk), "--eval-every", "1"], f"{junk}: unreadable HDF5 file"),
        "no val": (["--eval-every", "1"], "train config: eval_every=1 needs a validation file (val)"),
    }[case]
    out = tmp_path / "run"
    assert main(_train_argv(data, out, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {problem}"), err
    assert not (out / "config.json").exists() and not (out / "log.csv").exists()


# ------------------------------------------------------------------------------------------ notebook 03


def test_first_and_last_evaluation_and_the_figure_per_run():
    import matplotlib

    matplotlib.use("Agg")
    from eiclip_core.figures import validation_curves_figure
    from eiclip_core.train.validation import first_and_last

    nan = float("nan")
    logs = pd.DataFrame({"row": ["clip-ft"] * 3 + ["ei-clip"] * 3 + ["cesm"] * 3, "seed": [0] * 6 + [1] * 3,
                         "step": [1, 2, 3] * 3, "val_mean": [nan, 5.0, 7.0, nan, 6.0, 9.5] + [nan] * 3})
    table = first_and_last(logs)
    assert table.to_dict("records") == [
        {"row": "clip-ft", "seed": 0, "first_step": 2, "first_mean": 5.0, "last_step": 3, "last_mean": 7.0},
        {"row": "ei-clip", "seed": 0, "first_step": 2, "first_mean": 6.0, "last_step": 3, "last_mean": 9.5}]
    ax = validation_curves_figure(logs).axes[0]
    assert [(line.get_label(), list(line.get_ydata())) for line in ax.get_lines()] == [
        ("clip-ft seed0", [5.0, 7.0]), ("ei-clip seed0", [6.0, 9.5])]  # a run never scored draws nothing
    unscored = logs.drop(columns="val_mean")  # logs of runs trained with eval_every = 0
    assert first_and_last(unscored).empty
    assert "eval_every = 0" in validation_curves_figure(unscored).axes[0].texts[0].get_text()
