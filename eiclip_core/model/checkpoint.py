"""Checkpoints that appear whole or not at all, carry their own checksum, and load without unpickling code.

A checkpoint is a plain dict of tensors and primitives (nanoGPT style) saved with `torch.save` through
`io.atomic_path`, plus `"sha256"`: a digest of the payload's content. Loading uses
`torch.load(weights_only=True)` and recomputes the digest, so a truncated or bit-flipped file is
detected; `latest_checkpoint` then warns and falls back to the previous one.
"""
import hashlib
import re
import sys
import warnings
from pathlib import Path

import torch

from eiclip_core.errors import KitError
from eiclip_core.io import atomic_path

FORMAT = 1
_NAME = re.compile(r"^(epoch|step)_(\d+)\.pt$")


def _digest(obj, h) -> None:
    """Feed a nested dict/list of tensors and primitives into hash `h` in a canonical order."""
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(f"k{k!s}".encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"l{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself, not a copy of it
    else:
        h.update(f"p{type(obj).__name__}{obj!r}".encode())


def checksum(payload: dict) -> str:
    h = hashlib.sha256()
    _digest(payload, h)
    return h.hexdigest()


def save_checkpoint(path, payload: dict) -> Path:
    """Write `payload` (+ format and checksum) atomically to `path`."""
    path = Path(path)
    record = {"format": FORMAT, "sha256": checksum(payload), "payload": payload}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        kept = _WriteErrorKeeper(f)
        try:
            torch.save(record, kept)
        except RuntimeError:
            if kept.error is None:
                raise
            raise kept.error from None  # a full disk: atomic_path names the file
    return path


class _WriteErrorKeeper:
    """The file torch.save writes through. torch turns a failed write into RuntimeError("unexpected pos
    ..."), losing the OSError; kept here, a full disk is "no space left on device", not a torch trace."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path, map_location="cpu") -> dict:
    """The payload of a checkpoint; KitError naming the file when it is unreadable or corrupt."""
    return _load_record(path, map_location)["payload"]


def checkpoint_id(path) -> str:
    """A checkpoint's identity (16 hex digits): the checksum of its payload stored at save time.

    Not a digest of the file: torch.save names the zip's records after the (temporary) file, so
    two saves of the same payload differ in bytes, while their payloads hash alike. The tensors are
    memory-mapped, not read: an id costs no pass over the weights, and load_checkpoint verifies the
    checksum whenever the weights are actually used.
    """
    return _load_record(path, "cpu", verify=False)["sha256"][:16]


def _load_record(path, map_location, verify: bool = True) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: checkpoint not found")
    try:
        record = torch.load(path, map_location=map_location, weights_only=True, mmap=not verify)
    except Exception as e:  # truncated zip, bad pickle opcode, foreign object: all "corrupt" to a user
        raise KitError(f"{path}: corrupt checkpoint ({type(e).__name__})") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT or "payload" not in record:
        raise KitError(f"{path}: not an eiclip checkpoint (format {FORMAT})")
    if not verify:
        return record
    if checksum(record["payload"]) != record.get("sha256"):
        raise KitError(f"{path}: corrupt checkpoint (checksum mismatch)")
    return record


def checkpoint_files(ckpt_dir) -> list:
    """Checkpoint files of a run, newest (highest global step) first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append(p)
    # one run writes its checkpoints one after the other, so write time orders them
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def latest_checkpoint(ckpt_dir, map_location="cpu"):
    """(path, payload) of the newest checkpoint that loads and verifies, or (None, None).

    Corrupt candidates are skipped with a warning naming them, so a crash during a write (or a
    damaged disk) costs at most the steps since the previous checkpoint.
    """
    for p in checkpoint_files(ckpt_dir):
        try:
            return p, load_checkpoint(p, map_location)
        except KitError as e:
            msg = f"warning: {e}; falling back to the previous checkpoint"
            warnings.warn(msg)
            print(msg, file=sys.stderr)
    return None, None


def prune_checkpoints(ckpt_dir, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints (keep = 0: keep all)."""
    if keep <= 0:
        return
    for p in checkpoint_files(ckpt_dir)[keep:]:
        p.unlink(missing_ok=True)
