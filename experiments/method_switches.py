"""EI-CLIP's [kit] switches as ablation rows on a seed no reported table uses, re-runnable.

Every row trains on the knob-1 data (the confounder at full strength) of data seed 7 with training seed
7, the quick recipe (46 steps, validation at steps 16, 32 and 46). Neither seed is used by a reported
table, so what is chosen here is not tuned on the final numbers. Each variant is EI-CLIP with one
switch of METHOD.md changed (sections 3 to 9); CLIP-FT is the reference. For each variant it prints the
validation mean recall per scored step, the gain over CLIP-FT at the last, and notebook 05's module
readings (gates, attention against the prior, E_t against D_t) where the variant has those modules.

    python experiments/method_switches.py                   # the default variants, each a quick-sized run
    python experiments/method_switches.py --variants rate-x1 rate-x10 default   # METHOD.md sec. 9's table
    python experiments/method_switches.py --profile smoke --variants default --out /tmp/switches-smoke
"""
import argparse
import csv
import dataclasses
import os
from pathlib import Path

import eiclip_core  # noqa: F401  (offline environment)
from eiclip_core.analysis import sections
from eiclip_core.analysis.runs import load_analysed_runs
from eiclip_core.pipeline.profiles import get_profile, profile_config
from eiclip_core.runtime import resolve_device
from eiclip_core.analysis.sweep import generate_and_mine

SEED = 7  # neither a data seed nor a training seed of any reported table

# name: (what is changed, EIConfig overrides, new_module_lr_scale); the default is EI-CLIP as shipped
VARIANTS = {
    "default": ("EI-CLIP as shipped: soft gates, bare prompt, lambda_ent 0.5, new modules at lr x 100", {}, 100.0),
    "hard": ("CESM gates hard: Gumbel top-2, straight-through (sec. 5)", {"selection": "hard"}, 100.0),
    "all": ("no selection: every gate 1 (sec. 5)", {"selection": "all"}, 100.0),
    "typed": ("dictionary prompt '{type}: {value}' (sec. 3)", {"prompt": "typed"}, 100.0),
    "lambda0": ("lambda_ent 0: E_t learnable, no L_ent (sec. 7)", {"lambda_ent": 0.0}, 100.0),
    "lambda2": ("lambda_ent 2 (sec. 7)", {"lambda_ent": 2.0}, 100.0),
    "no-ealm": ("the CESM row: intervention only, frozen D_t, no L_ent (sec. 8)", {"ealm": False}, 100.0),
    "no-intervention": ("the EALM-only row: no backdoor adjustment (sec. 8)", {"intervention": False}, 100.0),
    "rate-x1": ("new modules at the backbone's rate (sec. 9)", {}, 1.0),
    "rate-x10": ("new modules at lr x 10 (sec. 9)", {}, 10.0),
}
DEFAULT_VARIANTS = ["default", "hard", "all", "typed", "lambda0", "lambda2", "no-ealm", "no-intervention"]


def run(profile, data: Path, out: Path, row: str, model: dict, scale: float) -> Path:
    """One training run into out/runs/<row>/seed7, its data files linked from `data`. `train` reuses a finished
    run of the same config (and refuses one of another), and resumes a killed one."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.h5", "validation.h5", "entities.json", "ground_truth.json"):
        if not (out / name).exists():
            os.symlink((data / name).resolve(), out / name)
    cfg = dataclasses.replace(profile_config(profile, out, row, SEED, device="cpu"), model=model,
                              new_module_lr_scale=scale)
    from eiclip_core.train.loop import train

    return train(cfg, resume="latest" if (Path(cfg.out) / "config.json").exists() else "", progress=True)


def validation_curve(run_dir: Path) -> dict:
    """{step: validation mean recall} of a run's log.csv."""
    with open(run_dir / "log.csv", newline="") as f:
        return {int(r["step"]): float(r["val_mean"]) for r in csv.DictReader(f) if r.get("val_mean")}


def module_readings(folder: Path, model: dict) -> list:
    """Notebook 05's readings of the variant's modules (gates and attention need the intervention)."""
    runs = load_analysed_runs(folder, SEED, resolve_device("cpu"))
    read = []
    if model.get("intervention", True):
        gates = sections.section_gates(runs, folder / "reports")
        read += [gates, sections.section_attention(runs, folder / "reports", gates["attention"], seed=SEED)]
    if model.get("ealm", True):
        read.append(sections.section_dictionaries(runs, folder / "reports", SEED))
    return [section["reading"] for section in read]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--out", type=Path, default=Path("data/method-switches"))
    args = parser.parse_args()
    profile = get_profile(args.profile)
    data = args.out / "data"
    generate_and_mine(profile, data, 1.0, SEED, sizes=(profile.n_train_products, profile.n_val_products))
    clip_ft = validation_curve(run(profile, data, args.out / "clip-ft", "clip-ft", {}, 1.0))
    table = [("CLIP-FT", "the reference: no intervention, no EALM", clip_ft)]
    for name in args.variants:
        what, model, scale = VARIANTS[name]
        folder = args.out / name
        curve = validation_curve(run(profile, data, folder, "ei-clip", model, scale))
        if not (folder / "runs" / "clip-ft").exists():
            os.symlink((args.out / "clip-ft" / "runs" / "clip-ft").resolve(), folder / "runs" / "clip-ft")
        print(f"\n{name}: {what}")
        for reading in module_readings(folder, model):
            print(reading)
        table.append((name, what, curve))
    last = max(clip_ft)
    print(f"\n| variant | what changes | validation mean recall ({' / '.join(f'step {s}' for s in clip_ft)}) "
          f"| gain over CLIP-FT at step {last} |\n|---|---|---|---|")
    for name, what, curve in table:
        recalls = " / ".join(f"{v:.2f}" for v in curve.values())
        print(f"| {name} | {what} | {recalls} | {curve[last] - clip_ft[last]:+.2f} |")


if __name__ == "__main__":
    main()
