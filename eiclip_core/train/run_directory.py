"""A training run's directory: the one place that decides whether a run is reused, refused or started,
and that writes the run's files.

    config.json    the config, the row's EIConfig, the inputs' identity (entity artifact id, training file's
                   path, size and mtime), git revision, world size
    .lock          held (fcntl.flock) by the process training in the directory; names its pid
    log.csv        one row per optimiser step (LOG_FIELDS; with eval_every on, VAL_FIELDS too, filled at
                   the evaluated steps and empty at the others)
    checkpoints/   {epoch_<k>,step_<n>}.pt: resume points (train.RunState payloads), none at the last step
    final.pt       the trained model (read back by eiclip_core.model.factory.load_run)
    done.json      device, world size, seconds, steps, throughput, the checkpoint resumed from

Every rank may ask (is_done, check_can_start); only rank 0 locks and writes.
"""
import csv
from dataclasses import dataclass
from pathlib import Path

from eiclip_core import layout
from eiclip_core.model.checkpoint import save_checkpoint
from eiclip_core.model.config import TrainConfig
from eiclip_core.errors import KitError
from eiclip_core.io import file_identity, folder_lock, read_json_object, write_json, write_text
from eiclip_core.evaluation.metrics import metric_keys

LOG_FIELDS = ["step", "epoch", "loss", "loss_itc", "loss_ent", "lr", "logit_scale", "samples_per_s"]
VAL_FIELDS = [f"val_{k}" for k in metric_keys()]  # validation recall (eiclip_core.train.validation), percent


def log_fields(config: dict) -> list:
    """The columns of a run's log.csv: the validation recalls only for a run that evaluates (a run
    that does not has the training columns, LOG_FIELDS, alone)."""
    return LOG_FIELDS + VAL_FIELDS if config.get("eval_every") else LOG_FIELDS


INPUT_KEYS = ("entity_artifact_id", "train_identity")  # what a run is made from besides its config
# config fields that leave the numbers alone (validation only reads the model: tests/test_validation_curve.py),
# so a resumed run may change them
RESUME_MAY_DIFFER = ("out", "checkpoint_every", "keep_checkpoints", "val", "eval_every")


def run_record(cfg: TrainConfig, artifact_id: str) -> dict:
    """What config.json pins about a run: the config plus what identifies its inputs (INPUT_KEYS)."""
    return {"config": cfg.to_dict(), "ei_config": cfg.ei_config().to_dict(), "entity_artifact_id": artifact_id,
            "train_identity": file_identity(cfg.train)}


@dataclass
class RunDirectory:
    """The files of the run at `path` (see the module docstring)."""

    path: Path

    def __post_init__(self):
        self.path = Path(self.path)
        self.config_file = self.path / "config.json"
        self.log_file = self.path / "log.csv"
        self.checkpoints = self.path / "checkpoints"
        self.log_fields = LOG_FIELDS  # set from the config by `open`

    # ------------------------------------------------------------------------- reuse decisions

    def is_done(self, record: dict) -> bool:
        """A finished run (layout.run_finished: config.json, final.pt, done.json) trained with exactly this
        record (run_record): reuse it instead of training again. Same config from other inputs (INPUT_KEYS)
        is refused: reusing it would be a silent wrong result, training over it would lose it."""
        if not layout.run_finished(self.path):
            return False
        saved = read_json_object(self.config_file, "run config")
        if saved.get("config") != record["config"]:
            return False
        changed = [k for k in INPUT_KEYS if saved.get(k) != record[k]]
        if changed:
            raise KitError(f"{self.path}: run directory holds a run made from other inputs ({', '.join(changed)} "
                           "differ); pass another --out or delete it")
        return True

    def check_can_start(self, record: dict, resume: str) -> None:
        """A new run never overwrites another one; a resumed run must have the same record (run_record),
        RESUME_MAY_DIFFER aside, or is refused naming each field that differs with both values."""
        if not self.config_file.exists():
            return
        if not resume:
            raise KitError(f"{self.path}: run directory already holds a run (pass --resume latest, or another --out)")
        changed = record_changes(read_json_object(self.config_file, "run config"), record)
        if changed:
            raise KitError(f"{self.config_file}: resume needs the same config and inputs; this run differs in "
                           + ", ".join(changed))

    def lock(self):
        """Hold the directory's lock file while training in it (io.folder_lock): a second process on the
        same --out gets one line naming the holder's pid instead of interleaving the log."""
        return folder_lock(self.path, "run directory")

    # -------------------------------------------------------------------------------- writing

    def open(self, record: dict, step: int, extra: dict) -> None:
        """Start (or restart at optimiser step `step`) writing: config.json, log.csv cut back to `step`."""
        for stale in self.checkpoints.glob(".*.tmp"):  # half-written checkpoints of a killed attempt
            stale.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_file, {**record, **extra})
        self.log_fields = log_fields(record["config"])
        # rows after the checkpoint belong to the killed attempt; they will be written again
        self._write_log([r for r in self._read_log() if int(r["step"]) <= step])

    def append_log(self, step: int, epoch: int, losses: dict, logit_scale: float, samples_per_s: float,
                   val: dict | None = None) -> None:
        """The row of optimiser step `step`: its losses and learning rate (train.train_step's dict) and,
        at an evaluated step, `val`, the validation metrics (ValidationSplit.recalls)."""
        row = {"step": step, "epoch": epoch, **{k: f"{losses[k]:.6f}" for k in ("loss", "loss_itc", "loss_ent")},
               "lr": f"{losses['lr']:.6g}", "logit_scale": f"{logit_scale:.4f}",
               "samples_per_s": f"{samples_per_s:.2f}",
               **{f"val_{k}": f"{v:.4f}" for k, v in (val or {}).items()}}
        with open(self.log_file, "a") as f:
            f.write(_csv_line(row, self.log_fields))

    def finish(self, final: dict, done: dict) -> None:
        """final.pt (the model and what rebuilds it), then done.json: a run is finished once both exist."""
        save_checkpoint(self.path / "final.pt", final)
        write_json(self.path / "done.json", done)

    def _read_log(self) -> list:
        if not self.log_file.exists():
            return []
        with open(self.log_file, newline="") as f:
            return list(csv.DictReader(f))

    def _write_log(self, rows: list) -> None:
        write_text(self.log_file, ",".join(self.log_fields) + "\n"
                   + "".join(_csv_line(r, self.log_fields) for r in rows))


def record_changes(saved: dict, record: dict) -> list:
    """What differs between a saved run record and `record`, as "field (saved value recorded, new value
    here)": the config field by field (RESUME_MAY_DIFFER aside), then the inputs. The row's EIConfig follows
    from the config, so it is named only when the config is the same (the row's defaults changed)."""
    old, new = saved.get("config"), record["config"]
    old = old if isinstance(old, dict) else {}
    keys = sorted((set(old) | set(new)) - set(RESUME_MAY_DIFFER))
    changed = [f"{k} ({old.get(k)!r} recorded, {new.get(k)!r} here)" for k in keys if old.get(k) != new.get(k)]
    others = [k for k in record if k != "config" and not (k == "ei_config" and changed)]
    return changed + [f"{k} ({saved.get(k)!r} recorded, {record[k]!r} here)" for k in others
                      if saved.get(k) != record[k]]


def _csv_line(row: dict, fields: list) -> str:
    """A log row; a column the row lacks (validation recall at a step not evaluated) is left empty."""
    return ",".join(str(row.get(k, "")) for k in fields) + "\n"
