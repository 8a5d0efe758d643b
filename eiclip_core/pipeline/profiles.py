"""Profiles: the named sizes of a reproduction, as data in one place (not copies of notebooks).

A profile says which data to use (generated sizes, or the real Fashion-Gen files), which rows of
METHOD.md section 8 to train with which seeds, and the recipe of every run (backbone, length, batch,
learning rate: `Profile.train`, a TrainConfig without paths). `eiclip synth`, `eiclip reproduce` and
the notebooks' `parameters` cells all read them from here; `profile_config` makes one run's config.
"""
import dataclasses
from dataclasses import dataclass, field

from eiclip_core.errors import KitError
from eiclip_core.layout import entities_file, run_dir, split_file
from eiclip_core.model.config import ROWS, TrainConfig
from eiclip_core.protocols import BASELINE, METHOD

# TrainConfig fields that differ between the runs of a profile (profile_config sets them); every other
# field is the profile's recipe, in Profile.train
PER_RUN = ("train", "val", "entities", "out", "row", "seed", "device")
RECIPE = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN)


@dataclass(frozen=True)
class Profile:
    name: str
    # data: generated (synth) unless real_data is set
    real_data: bool = False
    n_train_products: int = 0  # generated products in the training split
    n_val_products: int = 0  # generated products in the validation split
    image_size: int = 64  # pixels of the stored images (the real files are 256)
    confounding: float = 0.8  # generator knob in [0, 1], see eiclip_core.synth
    data_seed: int = 0  # seed of the generated data set
    # model and training: the recipe of every run (backbone, pretrained, epochs, batch_size, lr, ...), a
    # TrainConfig without the fields profile_config sets per run (PER_RUN); pretrained "random" asks for an
    # untrained backbone on purpose
    train: TrainConfig = field(default_factory=TrainConfig)
    rows: tuple = (BASELINE, METHOD)  # rows of METHOD.md section 8 to train (zero-shot is always evaluated)
    seeds: tuple = (0,)
    # evaluation
    sample100_queries: int = 1000
    # notebook 01: the confounder before fine-tuning (METHOD.md section 11): zero-shot retrieval of the
    # general backbone at knob 0 and knob 1 for each of these data seeds, and the brand-swap probe
    harm_data_seeds: tuple = ()  # () = not measured (real data has no knob)
    swap_queries: int = 200  # products whose brand is swapped per colour word
    # notebook 05: EI-CLIP's gain over CLIP-FT as a function of the generator's confounding knob,
    # from runs at each knob value x data seed x training seed (eiclip_core.analysis.sweep)
    confounding_sweep: tuple = ()  # knob values; () = no sweep (real data has no knob)
    sweep_products: tuple = (1000, 300)  # generated (train, validation) products per knob value
    sweep_epochs: int = 2
    sweep_data_seeds: tuple = (0,)  # draws of the data at each knob value (the same draw at every knob)
    sweep_seeds: tuple = (0,)  # training seeds of each row on each draw


PROFILES = {
    "smoke": Profile(
        name="smoke", n_train_products=256, n_val_products=128, image_size=64,
        rows=(BASELINE, METHOD), seeds=(0,),
        train=TrainConfig(epochs=1, max_steps=4, batch_size=32, lr=1e-4, warmup_steps=1, eval_every=2),
        sample100_queries=100, confounding_sweep=(0.0, 1.0), sweep_products=(32, 32), sweep_epochs=1,
        harm_data_seeds=(0, 1), swap_queries=16,
    ),
    # one pass over 3000 products (46 optimiser steps), so that the whole run fits in 20 minutes on 2 CPU
    # cores; validation recall at steps 16, 32 and 46 (bench/validation.py measures one evaluation of the
    # 600 products against a training step)
    "quick": Profile(
        name="quick", n_train_products=3000, n_val_products=600, image_size=64,
        rows=(BASELINE, METHOD), seeds=(0, 1),
        train=TrainConfig(epochs=1, batch_size=64, lr=1e-4, warmup_steps=10, eval_every=16),
        sample100_queries=600, confounding_sweep=(0.0, 0.5, 1.0), sweep_products=(800, 300), sweep_epochs=2,
        harm_data_seeds=(0, 1, 2),
    ),
    # the sweep's question at a size that can answer it: does EI-CLIP beat CLIP-FT where the confounder
    # is (knob 1) and not where it is not (knob 0, the control)? 2 data seeds x 3 training seeds per knob,
    # quick-sized runs of 2 epochs; `quick`'s sweep is its small, one-seed version. Main table: runs at
    # knob 0.8 of the sweep's length, with validation recall at steps 23, 46, 69 and 92, the curves that
    # say whether that length has flattened CLIP-FT's recall.
    "science": Profile(
        name="science", n_train_products=3000, n_val_products=600, image_size=64,
        rows=(BASELINE, METHOD), seeds=(0, 1),
        train=TrainConfig(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10, eval_every=23),
        sample100_queries=600, confounding_sweep=(0.0, 0.5, 1.0),
        sweep_products=(3000, 600), sweep_epochs=2, sweep_data_seeds=(0, 1), sweep_seeds=(0, 1, 2),
        harm_data_seeds=(0, 1, 2),
    ),
    "ablation": Profile(
        name="ablation", n_train_products=3000, n_val_products=600, image_size=64,
        rows=tuple(ROWS), seeds=(0, 1),
        train=TrainConfig(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10), sample100_queries=600,
    ),
    "paper": Profile(
        name="paper", real_data=True, image_size=256, rows=(BASELINE, METHOD), seeds=(0,),
        train=TrainConfig(backbone="ViT-B-32", pretrained="openai", epochs=10, batch_size=64, lr=5e-5,
                          warmup_steps=100),
        sample100_queries=1000,
    ),
    # `eiclip reproduce --profile catalog --data-dir DIR`: a catalog imported with `eiclip import-catalog`
    # (no generated sizes: the files say how many products; no knob, so no sweep)
    "catalog": Profile(
        name="catalog", image_size=256, rows=(BASELINE, METHOD), seeds=(0,),
        train=TrainConfig(epochs=2, batch_size=64, lr=1e-4, warmup_steps=10), sample100_queries=1000,
    ),
    # `eiclip reproduce --profile paper --dry-run`: the paper profile's code path end to end on a
    # small generated 256-pixel file in the same schema, 2 steps of a random-init ViT-B-32.
    "paper-dry-run": Profile(
        name="paper-dry-run", n_train_products=48, n_val_products=112, image_size=256,
        rows=(BASELINE, METHOD), seeds=(0,),
        train=TrainConfig(backbone="ViT-B-32", pretrained="random", epochs=1, max_steps=2, batch_size=8,
                          lr=5e-5, warmup_steps=1),
        sample100_queries=50,
    ),
}


def check_seed(seed: int) -> None:
    """Seeds are non-negative (numpy's seed sequences refuse others)."""
    if seed < 0:
        raise KitError(f"--seed {seed}: must be 0 or more")


def get_profile(name: str, seed: int | None = None, **overrides) -> Profile:
    """The named profile, with any non-None overrides applied (e.g. confounding=0.5): Profile fields, and
    the recipe's TrainConfig fields by name (e.g. batch_size=8), which change `Profile.train`.

    `seed` moves every seed of the profile at once: the generated data is drawn with `seed` and the
    training seeds become seed, seed+1, ... (as many as the profile has; so do the data seeds of the
    harm and the data and training seeds of the sweep), so a reproduction with another seed checks that
    results are not tied to one draw.
    """
    if name not in PROFILES:
        raise KitError(f"profile {name!r}: unknown profile (choose from {', '.join(PROFILES)})")
    if seed is not None:
        check_seed(seed)
        shifted = lambda key: tuple(seed + i for i in range(len(getattr(PROFILES[name], key))))  # noqa: E731
        overrides.update(data_seed=seed, seeds=shifted("seeds"), harm_data_seeds=shifted("harm_data_seeds"),
                         sweep_data_seeds=shifted("sweep_data_seeds"), sweep_seeds=shifted("sweep_seeds"))
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Profile)} - set(RECIPE)
    if unknown:
        raise KitError(f"profile {name!r}: unknown setting(s) {', '.join(sorted(unknown))}")
    recipe = {k: overrides.pop(k) for k in RECIPE if k in overrides}
    profile = dataclasses.replace(PROFILES[name], **overrides)
    # a TrainConfig of its own (with its own `model` dict): changing it never changes PROFILES
    train = dataclasses.replace(profile.train, model=dict(recipe.pop("model", profile.train.model)), **recipe)
    return dataclasses.replace(profile, train=train)


def profile_config(profile: Profile, data_dir, row: str, seed: int, device: str = "auto") -> TrainConfig:
    """The TrainConfig of one run of `profile`: its recipe on the kit's data layout under data_dir."""
    return dataclasses.replace(
        profile.train, train=str(split_file(data_dir, "train")), val=str(split_file(data_dir, "validation")),
        entities=str(entities_file(data_dir)), out=str(run_dir(data_dir, row, seed)), row=row, seed=seed,
        device=device, model=dict(profile.train.model))
