"""Atomic writes: results, artifacts and checkpoints appear whole or not at all.

Everything is written to a temporary file in the destination folder, flushed to disk and renamed
over the destination (rename is atomic on POSIX), so a crash or a failed run never leaves a
half-written file where a reader expects a complete one.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path

from eiclip_core.errors import KitError


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temporary path beside `dest`; on success rename it to `dest`, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; results are ordinary files
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(dest, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest, obj, indent: int = 2) -> None:
    write_text(dest, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n")


def read_json(path, what: str, missing_hint: str = ""):
    """The parsed JSON of `path`; KitError naming the file when it is missing or not readable JSON."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: {what} not found" + (f" ({missing_hint})" if missing_hint else ""))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"{path}: unreadable {what} ({type(e).__name__}: {e})") from None
