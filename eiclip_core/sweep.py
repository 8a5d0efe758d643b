"""The confounding sweep of notebook 05: EI-CLIP's gain over CLIP-FT against the generator's knob.

EI-CLIP's premise (METHOD.md section 1) is that entity words whose everyday meaning misleads a
generic text encoder bias fine-tuning, and that the intervention corrects it. On generated data the
knob `confounding` sets how many entity values are such ordinary words, so the premise predicts a
gain that grows with the knob. For each knob value X in the profile's `confounding_sweep`:

    {data_dir}/sweep/conf<X>/  train.h5, validation.h5, ground_truth.json   (eiclip_core.synth)
                               entities.json                                (eiclip_core.entities)
                               runs/<row>/seed<k>/                          (eiclip_core.train)
                               result.json                                  full-protocol recalls

Every stage is reused when its output exists with the same settings, so re-running the notebook
costs seconds; a changed profile setting retrains only what it changes.
"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from eiclip_core import layout
from eiclip_core.analysed_runs import ANALYSED_ROWS
from eiclip_core.errors import KitError
from eiclip_core.io import write_json
from eiclip_core.profiles import Profile


def point_dir(data_dir, confounding: float) -> Path:
    return Path(data_dir) / "sweep" / f"conf{confounding:g}"


def sweep_steps(profile: Profile) -> int:
    """Optimiser steps of one sweep run: sweep_epochs passes over sweep_products[0] products."""
    return max(1, math.ceil(profile.sweep_products[0] / profile.batch_size) * profile.sweep_epochs)


def point_settings(profile: Profile, confounding: float, seed: int) -> dict:
    """What decides a sweep point's numbers (stored in result.json, compared on reuse)."""
    fields = ("name", "image_size", "data_seed", "backbone", "pretrained",
              "batch_size", "lr", "warmup_steps", "sweep_products", "sweep_epochs")
    settings = {f: getattr(profile, f) for f in fields}
    settings["sweep_products"] = list(settings["sweep_products"])
    return {**settings, "confounding": float(confounding), "seed": int(seed), "steps": sweep_steps(profile)}


def _data(profile: Profile, out: Path, confounding: float) -> None:
    """Generate the point's data unless the same draw is already there."""
    from eiclip_core.synth import generate_unless_present

    generate_unless_present(out, profile.name, profile.data_seed, confounding, profile.image_size,
                            *profile.sweep_products)


def _entities(out: Path):
    from eiclip_core.entities import load_artifact
    from eiclip_core.entities.mine import mine_dataset

    path = layout.entities_file(out)
    data_mtime = max(layout.split_file(out, s).stat().st_mtime for s in layout.SPLITS)
    if path.exists() and path.stat().st_mtime >= data_mtime:
        return load_artifact(path)
    return mine_dataset(layout.split_file(out, "train"), layout.split_file(out, "validation"), path, progress=False)


def _train(profile: Profile, out: Path, row: str, seed: int, device: str) -> Path:
    from eiclip_core.config import TrainConfig
    from eiclip_core.train import train

    cfg = TrainConfig(train=str(layout.split_file(out, "train")), entities=str(layout.entities_file(out)),
                      out=str(layout.run_dir(out, row, seed)), row=row, backbone=profile.backbone,
                      pretrained=profile.pretrained, seed=seed, epochs=max(1, profile.sweep_epochs),
                      max_steps=sweep_steps(profile), batch_size=profile.batch_size, lr=profile.lr,
                      # a short run keeps at most a quarter of its steps for warm-up
                      warmup_steps=min(profile.warmup_steps, sweep_steps(profile) // 4), device=device)
    run = train(cfg, progress=False)  # reuses a finished run with the same config (done.json)
    # resume checkpoints (~270 MB a run) only serve a killed run; a finished one needs final.pt alone
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return run


def _full_recall(run: Path, out: Path, device) -> dict:
    """Full protocol (every validation product, first view, one text each) for one run."""
    from eiclip_core.checkpoint import checkpoint_id
    from eiclip_core.data import FashionGen
    from eiclip_core.evaluate import cached_embeddings
    from eiclip_core.metrics import retrieval_metrics
    from eiclip_core.loading import load_run

    validation = FashionGen(layout.split_file(out, "validation"))
    emb = cached_embeddings(lambda: load_run(run, device)[:2], {"checkpoint": checkpoint_id(run / "final.pt")},
                            validation, layout.cache_dir(out), device)
    pids = validation.products["product_id"].to_numpy()
    return retrieval_metrics(emb.image[emb.first_view], emb.text, pids, pids)


def run_point(profile: Profile, data_dir, confounding: float, seed: int = 0, device="cpu") -> dict:
    """One knob value: data, entities, CLIP-FT and EI-CLIP runs, full recalls; cached in result.json."""
    out = point_dir(data_dir, confounding)
    result = out / "result.json"
    settings = point_settings(profile, confounding, seed)
    if result.exists():
        saved = json.loads(result.read_text())
        if saved.get("settings") == settings:
            return saved
    out.mkdir(parents=True, exist_ok=True)
    _data(profile, out, confounding)
    _entities(out)
    metrics = {row: _full_recall(_train(profile, out, row, seed, str(device)), out, device) for row in ANALYSED_ROWS}
    record = {"settings": settings, "metrics": metrics}
    write_json(result, record)
    return record


def run_sweep(profile: Profile, data_dir, seed: int = 0, device="cpu") -> pd.DataFrame:
    """Every knob value of the profile: one row each, mean recall of both rows and the gain (points)."""
    if profile.real_data or not profile.confounding_sweep:
        raise KitError(f"profile {profile.name!r}: no confounding sweep (real data has no knob)")
    rows = []
    for x in tqdm(sorted(profile.confounding_sweep), desc="confounding sweep"):
        m = run_point(profile, data_dir, x, seed, device)["metrics"]
        rows.append({"confounding": float(x), "mean R CLIP-FT": m["clip-ft"]["mean"],
                     "mean R EI-CLIP": m["ei-clip"]["mean"], "gain": m["ei-clip"]["mean"] - m["clip-ft"]["mean"]})
    return pd.DataFrame(rows)


def trend(table: pd.DataFrame) -> dict:
    """Does the gain grow with confounding? Least-squares slope (points per unit knob), whether the gain
    rises at every step, and the gain at the lowest and highest knob values."""
    x, y = table["confounding"].to_numpy(float), table["gain"].to_numpy(float)
    slope = float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 else float("nan")
    return {"slope": slope, "monotonic": bool(np.all(np.diff(np.round(y, 2)) > 0)), "gain at lowest": float(y[0]),
            "gain at highest": float(y[-1])}
