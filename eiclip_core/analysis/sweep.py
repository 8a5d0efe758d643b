"""The confounding sweep of notebook 05: CLIP zero-shot, CLIP-FT and EI-CLIP against the generator's knob.

EI-CLIP's premise (METHOD.md sections 1 and 11) is that entity words whose everyday meaning misleads a
generic text encoder bias fine-tuning, and that the intervention corrects it. On generated data the
knob `confounding` sets how many entity values are such ordinary words (knob 0 is the control), so
the premise predicts a gain of EI-CLIP over CLIP-FT where the knob is high and none at knob 0. For
each knob value X of `Profile.confounding_sweep` and data seed D of `Profile.sweep_data_seeds`, a
sweep point, and each training seed K of `Profile.sweep_seeds`:

    {data_dir}/sweep/<key>/settings.json          what <key> stands for (point_settings, readable)
    {data_dir}/sweep/<key>/conf<X>-data<D>/        train.h5, validation.h5, ground_truth.json, entities.json
                                                   runs/<row>/seed<K>/   (eiclip_core.train.loop)
                                                   results/<row>-seed<K>.json, results/zero-shot.json

<key> is a hash of every setting that decides a point's numbers besides X, D and K (the profile's
sizes and the whole training config), so a point made with other settings is never reused: changed
settings get a folder of their own. Every stage is reused when done: the data (its completion marker),
the entities, each finished run (its done.json, eiclip_core.train.run_directory) and each run's recalls
(tied to the run's checkpoint id). A sweep killed mid-way resumes where it stopped: a run killed
mid-training continues from its last checkpoint, and finished runs are not trained again.
The statistics over the runs (spread, harm, paired test) are in eiclip_core.analysis.sweep_statistics.
"""
import dataclasses
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from eiclip_core import layout
from eiclip_core.errors import KitError
from eiclip_core.io import write_json
from eiclip_core.protocols import BASELINE, METHOD, ZERO_SHOT

if TYPE_CHECKING:  # the sweep reads a profile's settings; it never imports the pipeline
    from eiclip_core.pipeline.profiles import Profile

ROWS = (ZERO_SHOT, BASELINE, METHOD)  # the rows of the sweep's table, in the order shown
PER_RUN_PATHS = ("train", "entities", "out", "row", "seed")  # TrainConfig fields that differ between the runs


def sweep_steps(profile: "Profile") -> int:
    """Optimiser steps of one sweep run: sweep_epochs passes over sweep_products[0] products."""
    return max(1, math.ceil(profile.sweep_products[0] / profile.train.batch_size) * profile.sweep_epochs)


def train_config(profile: "Profile", out: "Path | None", row: str, seed: int, device: str):
    """The TrainConfig of one sweep run on the point folder `out` (None: no paths, for point_settings):
    the profile's recipe at the sweep's length, without validation during training. A short run keeps
    at most a quarter of its steps for warm-up."""
    paths = {} if out is None else {"train": str(layout.split_file(out, "train")),
                                    "entities": str(layout.entities_file(out)),
                                    "out": str(layout.run_dir(out, row, seed))}
    steps = sweep_steps(profile)
    return dataclasses.replace(profile.train, **paths, row=row, seed=seed, device=device,
                               model=dict(profile.train.model), epochs=max(1, profile.sweep_epochs),
                               max_steps=steps, warmup_steps=min(profile.train.warmup_steps, steps // 4),
                               eval_every=0)


def point_settings(profile: "Profile", device: str) -> dict:
    """What decides every point's numbers besides knob, data seed and training seed: the data sizes and
    the training config of a run with its paths, row and seed left out (so a new TrainConfig field is
    covered without a change here)."""
    template = train_config(profile, None, BASELINE, 0, str(device)).to_dict()
    return {"profile": profile.name, "image_size": profile.image_size, "sweep_products": list(profile.sweep_products),
            "train": {k: v for k, v in template.items() if k not in PER_RUN_PATHS}}


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def sweep_dir(profile: "Profile", data_dir, device="cpu") -> Path:
    """{data_dir}/sweep/<key>/ of these settings, with its settings.json (written once)."""
    settings = point_settings(profile, str(device))
    folder = Path(data_dir) / "sweep" / settings_key(settings)
    if not (folder / "settings.json").exists():
        write_json(folder / "settings.json", settings)
    return folder


def point_dir(folder: Path, confounding: float, data_seed: int) -> Path:
    return Path(folder) / f"conf{confounding:g}-data{data_seed}"


@dataclass(frozen=True)
class Point:
    """One (knob, data seed, row, training seed) of the sweep; row zero-shot has training seed None."""

    confounding: float
    data_seed: int
    row: str
    seed: "int | None"


def sweep_points(profile: "Profile") -> list[Point]:
    """Every point of the profile's sweep, knob by knob (zero-shot first within a data set)."""
    return [Point(float(x), int(d), row, None if row == ZERO_SHOT else int(k))
            for x in sorted(profile.confounding_sweep) for d in profile.sweep_data_seeds
            for row in ROWS for k in ((None,) if row == ZERO_SHOT else profile.sweep_seeds)]


def generate_and_mine(profile: "Profile", out: Path, confounding: float, data_seed: int, sizes=None) -> None:
    """Generate a draw of (train, validation) products, the sweep's sizes unless `sizes` is given, and mine
    its entities, unless both are already there (also used by experiments/method_switches.py)."""
    from eiclip_core.entities.mine import mine_dataset
    from eiclip_core.synth import generate_unless_present

    generated = generate_unless_present(out, profile.name, data_seed, confounding, profile.image_size,
                                        *(sizes or profile.sweep_products))
    if generated or not layout.entities_file(out).exists():
        mine_dataset(layout.split_file(out, "train"), layout.split_file(out, "validation"),
                     layout.entities_file(out), progress=False)


def _train(profile: "Profile", out: Path, row: str, seed: int, device: str) -> Path:
    """A finished run of (row, seed): reused when its run directory says it is done with this config and
    these inputs (without loading the trainer), continued from its last checkpoint when it was killed
    mid-training, trained otherwise."""
    from eiclip_core.entities import load_artifact
    from eiclip_core.train.run_directory import RunDirectory, run_record

    cfg = train_config(profile, out, row, seed, device)
    run = RunDirectory(cfg.out)
    if run.is_done(run_record(cfg, load_artifact(cfg.entities).id)):
        return run.path
    from eiclip_core.train.loop import train

    train(cfg, resume="latest" if run.config_file.exists() else "", progress=False)
    # resume checkpoints (~270 MB a run) only serve a killed run; a finished one needs final.pt alone
    shutil.rmtree(run.checkpoints, ignore_errors=True)
    return run.path


def _scored(load_model, model_key: dict, out: Path, device) -> dict:
    """Full protocol (every validation product, first view, one text each): recalls and the prone /
    not-prone entity breakdown of the same queries (scoring.entity_breakdown)."""
    from eiclip_core.data import FashionGen
    from eiclip_core.entities import load_artifact
    from eiclip_core.evaluation.embeddings import cached_embeddings
    from eiclip_core.evaluation.scoring import entity_breakdown, full_protocol

    validation = FashionGen(layout.split_file(out, "validation"))
    # no inner bars under the sweep's own: in an executed notebook they leave thousands of stderr lines
    emb = cached_embeddings(load_model, model_key, validation, layout.cache_dir(out), device, progress=False)
    scored = full_protocol(emb, validation.products["product_id"].to_numpy())
    artifact = load_artifact(layout.entities_file(out))
    return {"metrics": scored["metrics"], "breakdown": entity_breakdown(*scored["ranks"], artifact, len(validation))}


def _result(path: Path, identity: dict, score) -> dict:
    """The run's scored record from `path` when made from the same model (identity), else scored anew."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("identity") == identity:
            return saved
    record = {"identity": identity, **score()}
    write_json(path, record)
    return record


def run_point(profile: "Profile", folder: Path, point: Point, device="cpu") -> dict:
    """One point's scored record {"identity", "metrics", "breakdown"}, trained and scored unless done."""
    from eiclip_core.model.checkpoint import checkpoint_id
    from eiclip_core.entities import load_artifact
    from eiclip_core.model.factory import load_run, zero_shot

    out = point_dir(folder, point.confounding, point.data_seed)
    generate_and_mine(profile, out, point.confounding, point.data_seed)
    entities = layout.entities_file(out)
    if point.row == ZERO_SHOT:
        identity = {"zero_shot": profile.train.backbone, "pretrained": profile.train.pretrained,
                    "entities": load_artifact(entities).id}
        load = lambda: zero_shot(profile.train.backbone, profile.train.pretrained, entities, device)  # noqa: E731
        return _result(out / "results" / f"{ZERO_SHOT}.json", identity, lambda: _scored(load, identity, out, device))
    run = _train(profile, out, point.row, point.seed, str(device))
    identity = {"checkpoint": checkpoint_id(run / "final.pt")}
    load = lambda: load_run(run, device)[:2]  # noqa: E731
    return _result(out / "results" / f"{point.row}-seed{point.seed}.json", identity,
                   lambda: _scored(load, identity, out, device))


@dataclass
class SweepRuns:
    """Every point's numbers: `recalls` one row per point (confounding, data seed, row, seed, the six
    recalls and their mean; seed NaN for zero-shot), `breakdown` one row per point, entity type and
    prone / not-prone status (n queries, mean recall)."""

    recalls: pd.DataFrame
    breakdown: pd.DataFrame


def run_sweep(profile: "Profile", data_dir, device="cpu") -> SweepRuns:
    """Every point of the profile's sweep (sweep_points), each trained and scored unless already done."""
    if profile.real_data or not profile.confounding_sweep:
        raise KitError(f"profile {profile.name!r}: no confounding sweep (real data has no knob)")
    folder = sweep_dir(profile, data_dir, device)
    recalls, breakdown = [], []
    for point in tqdm(sweep_points(profile), desc="confounding sweep"):
        record = run_point(profile, folder, point, device)
        where = {"confounding": point.confounding, "data seed": point.data_seed, "row": point.row,
                 "seed": np.nan if point.seed is None else point.seed}
        recalls.append({**where, **record["metrics"]})
        breakdown += [{**where, "type": b["type"], "status": b["status"], "n": b["n"], "mean": b["mean"]}
                      for b in record["breakdown"]]
    return SweepRuns(pd.DataFrame(recalls), pd.DataFrame(breakdown))
