"""Configs as data: one base for every config dataclass, the model's switches and rows, and a training run.

`KitConfig` gives each config the same surface (as open_clip's tower configs share one shape):
`from_dict` refuses unknown fields and values of the wrong type, `__post_init__` checks ranges,
`to_dict` is what a run stores. `EIConfig` holds every switch of the model (eiclip_core.model.eiclip),
`ROWS` the rows of METHOD.md section 8 as its values, and `TrainConfig` one training run. They live
here, apart from the code they configure, so that the model imports its config and never the other
way, and loading a finished run (eiclip_core.model.factory) never imports the training loop.
"""
import typing
from dataclasses import asdict, dataclass, field, fields

from eiclip_core.errors import KitError
from eiclip_core.protocols import BASELINE, METHOD

DEFAULT_BACKBONE = "eiclip-tiny"  # small ViT + the pretrained MiniLM text tower (eiclip_core/model/configs)


def fits_type(value, expected: type) -> bool:
    """True when `value` is a `expected`; an int is a float, a bool is never a number."""
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


class KitConfig:
    """Mixin for config dataclasses: typed `from_dict`, range checks, `to_dict`.

    Subclasses set `label` (how errors name the config) and return {field: ok} from `checks()`.
    """

    label = "config"

    def checks(self) -> dict:
        return {}

    def __post_init__(self):
        for name, ok in self.checks().items():
            if not ok:
                raise KitError(f"{self.label}: {name}={getattr(self, name)!r} out of range")

    @classmethod
    def from_dict(cls, values: dict, where: str = ""):
        where = where or cls.label
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise KitError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        types = typing.get_type_hints(cls)
        for name, value in values.items():
            if not fits_type(value, types[name]):
                raise KitError(f"{where}: {name}={value!r} should be of type {types[name].__name__}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EIConfig(KitConfig):
    """Every [kit] choice of METHOD.md as one switch; the comment names the section it implements."""

    label = "model config"

    intervention: bool = True  # sec. 4-5: backdoor adjustment on/off (off = CLIP-FT / EALM only)
    selection: str = "soft"  # sec. 5 CESM gates: "soft" sigmoid | "hard" Gumbel top-k (straight-through) | "all" (g = 1)
    top_k: int = 2  # sec. 5: types kept by the hard gates
    gumbel_tau: float = 1.0  # sec. 5: temperature of the Gumbel-sigmoid relaxation
    side: str = "text"  # sec. 5: "text" (the paper's subject) | "image" (same module on the image feature)
    attn_dim: int = 64  # sec. 4: d_k of the query / key projections
    ealm: bool = True  # sec. 6: learnable E_t (from D_t) + L_ent; off = frozen D_t and no L_ent
    tau_e: float = 0.07  # sec. 6: initial entity temperature (learnable, clamped like CLIP's at 1/100)
    lambda_ent: float = 0.5  # sec. 7: weight of L_ent
    prompt: str = "bare"  # sec. 3: dictionary prompt, "bare" value | "typed" = "{type}: {value}"

    def checks(self) -> dict:
        return {
            "selection": self.selection in ("soft", "hard", "all"),
            "side": self.side in ("text", "image"),
            "prompt": self.prompt in ("bare", "typed"),
            "top_k": self.top_k >= 1,
            "gumbel_tau": self.gumbel_tau > 0,
            "attn_dim": self.attn_dim >= 1,
            "tau_e": 0 < self.tau_e <= 1,
            "lambda_ent": self.lambda_ent >= 0,
        }


# METHOD.md section 8; "zero-shot" is the untrained backbone (eiclip_core.model.factory.zero_shot), not a
# training row.
ROWS = {
    BASELINE: EIConfig(intervention=False, ealm=False),
    "intervention-all": EIConfig(intervention=True, selection="all", ealm=False),
    "cesm": EIConfig(intervention=True, selection="soft", ealm=False),
    "ealm-only": EIConfig(intervention=False, ealm=True),
    METHOD: EIConfig(intervention=True, selection="soft", ealm=True),
}


def get_row(name: str) -> EIConfig:
    """A copy of row `name`'s EIConfig (changing it leaves ROWS alone)."""
    if name not in ROWS:
        raise KitError(f"row {name!r}: unknown row (choose from {', '.join(ROWS)})")
    return EIConfig(**ROWS[name].to_dict())


@dataclass
class TrainConfig(KitConfig):
    """Everything that decides a run's numbers; saved as the run's config.json."""

    label = "train config"

    train: str = ""  # Fashion-Gen training HDF5
    val: str = ""  # validation HDF5 scored during training (eiclip_core.train.validation; "" = none)
    entities: str = ""  # entity artifact (eiclip mine); its id is recorded in config.json
    out: str = ""  # run directory
    row: str = METHOD  # METHOD.md sec. 8 row (ROWS)
    model: dict = field(default_factory=dict)  # overrides of the row's EIConfig fields (sec. 3-7 switches)
    backbone: str = DEFAULT_BACKBONE  # open_clip model name
    pretrained: str = ""  # open_clip tag or weights file ("" = the config's own pretrained towers)
    seed: int = 0
    epochs: int = 1
    max_steps: int = 0  # stop after this many optimiser steps (0 = all epochs)
    batch_size: int = 64  # global contrastive batch per micro-step (sec. 9), split across ranks
    accum_steps: int = 1  # micro-batches per optimiser step (each its own contrastive batch)
    lr: float = 5e-5  # sec. 9; the backbone's
    # the modules EI-CLIP adds to the backbone (sec. 4-6) train at lr x this; 100 chosen on a separate seed
    # (experiments/method_switches.py compares 1, 10 and 100): lower scales barely move them in a quick-sized run
    new_module_lr_scale: float = 100.0
    weight_decay: float = 1e-4  # sec. 9; not applied to gains, biases and temperatures
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 100  # linear warm-up, then cosine to 0 (sec. 9)
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader workers (images are small; 0 keeps a 2-core CPU busy with compute)
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps mid-epoch (0 = epoch ends only)
    keep_checkpoints: int = 2  # newest checkpoints kept (>= 2 so a corrupt one has a fallback; 0 = all)
    eval_every: int = 0  # full-protocol recall on `val` every N optimiser steps and at the last (0 = off)

    def checks(self) -> dict:
        return {
            "epochs": self.epochs >= 1, "max_steps": self.max_steps >= 0, "batch_size": self.batch_size >= 2,
            "accum_steps": self.accum_steps >= 1, "lr": 0 < self.lr < 1, "weight_decay": self.weight_decay >= 0,
            "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1, "eps": self.eps > 0,
            "warmup_steps": self.warmup_steps >= 0, "grad_clip": self.grad_clip >= 0,
            "precision": self.precision in ("auto", "fp32", "bf16", "fp16"),
            "num_workers": self.num_workers >= 0, "checkpoint_every": self.checkpoint_every >= 0,
            "keep_checkpoints": self.keep_checkpoints == 0 or self.keep_checkpoints >= 2,
            "seed": 0 <= self.seed < 2 ** 31, "model": isinstance(self.model, dict),
            "eval_every": self.eval_every >= 0, "new_module_lr_scale": self.new_module_lr_scale > 0,
        }

    def __post_init__(self):
        super().__post_init__()
        # a run that names its training data and scores validation needs the validation file; a recipe
        # without data (a profile's Profile.train) names neither
        if self.eval_every and self.train and not self.val:
            raise KitError(f"train config: eval_every={self.eval_every} needs a validation file (val)")
        self.ei_config()  # validates row and model overrides

    def ei_config(self) -> EIConfig:
        """The row's EIConfig with this run's `model` overrides applied."""
        return EIConfig.from_dict({**get_row(self.row).to_dict(), **self.model}, where="train config 'model'")

