"""Atomic writes: results, artifacts and checkpoints appear whole or not at all.

Everything is written to a temporary file in the destination folder, flushed to disk and renamed
over the destination (rename is atomic on POSIX), so a crash or a failed run never leaves a
half-written file where a reader expects a complete one. Files that are only complete together (a
data set) are written in a temporary folder and moved in at once (`staged_folder`). A folder that
cannot be written (read-only, a file in its place, a full disk) is one KitError line naming the
path, never a traceback.
Reading: JSON files named in one line when missing or damaged, and a data file's identity (what a run
record and the embedding cache key pin about their inputs).
"""
import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from eiclip_core.errors import KitError


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_WRITE_PROBLEMS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left on device (disk quota)",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "permission denied", errno.ENOTDIR: "a part of this path is a file, not a folder",
                   errno.EEXIST: "exists and is not a folder"}


def write_error(path, error: OSError) -> KitError:
    """The one line for an OSError met while writing at `path`: the path and what went wrong."""
    problem = _WRITE_PROBLEMS.get(error.errno, error.strerror or str(error))
    return KitError(f"{path}: cannot write here: {problem}")


def make_dir(path) -> Path:
    """`path` as an existing folder (created with its parents when missing); KitError when it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


def writable_dir(path) -> Path:
    """`make_dir`, then a temporary file created and removed in it: a read-only or full folder is one line
    at the start of a command, not a traceback after minutes of work."""
    path = make_dir(path)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise write_error(path, e) from None
    return path


def check_free_space(dest, n_bytes: int) -> None:
    """KitError when `dest`'s folder has less free space than `n_bytes` plus 1 MiB of HDF5 overhead.
    Checked before writing HDF5 (synth, import-catalog) because HDF5 2.0 segfaults on closing a file whose
    writes met ENOSPC (a full tmpfs, for one), so no exception would reach the command line."""
    dest = Path(dest)
    folder = next(f for f in dest.absolute().parents if f.exists())  # dest's folder may not exist yet
    free = shutil.disk_usage(folder).free
    if free < n_bytes + (1 << 20):
        raise KitError(f"{dest}: no space left on device (needs about {(n_bytes >> 20) + 1} MiB, "
                       f"{free >> 20} MiB free)")


@contextlib.contextmanager
def atomic_path(dest):
    """Yield a temporary path beside `dest`; on success rename it to `dest`, on error delete it.
    A full disk while writing (OSError ENOSPC/EDQUOT) becomes a KitError naming `dest`."""
    dest = Path(dest)
    make_dir(dest.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as e:
        raise write_error(dest.parent, e) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; results are ordinary files
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise write_error(dest, e) from None
        raise


STAGE_SUFFIX = ".partial"  # the temporary folders of staged_folder end so
_STAGE_INSIDE = ".stage."  # prefix of one made inside an existing destination
_held_locks = set()  # descriptors of the staged folders' locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a decoding worker): its copy of a lock would keep the folder locked after
    the parent is killed, and the next run would take the stale folder for a live one."""
    for fd in _held_locks:
        os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def staged_folder(dest):
    """Yield an empty temporary folder whose files appear in `dest` together when the block ends without
    error; on an error, or if the process dies, `dest` gets none of them.

    A `dest` that does not exist yet is the temporary folder itself, made beside it
    (`.<name>.<random>.partial`) and renamed to it at the end: one atomic step. An existing `dest`
    (made by the user, perhaps holding other files, perhaps the root of another disk) gets the
    temporary folder inside it (`.stage.<random>.partial`, so on its file system) and its files are
    renamed into `dest` one after another, with SIGINT and SIGTERM held back until the last; a file of
    the same name already there is a KitError, never overwritten. The temporary folder is locked
    (fcntl.flock) while its process lives, so the stale ones that killed runs left are removed first
    (`remove_stale_stages`) and a live one never is. A KitError raised in the block names `dest`, not
    the temporary folder.
    """
    dest = Path(dest)
    remove_stale_stages(dest)
    new = not dest.exists()
    home = make_dir(dest.parent) if new else dest
    stage, lock = _locked_stage(home, f".{dest.name}." if new else _STAGE_INSIDE)
    try:
        yield stage
        _publish(stage, dest, new)
    except KitError as e:
        raise KitError(str(e).replace(str(stage), str(dest))) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone already when it became `dest`
        _held_locks.discard(lock)
        os.close(lock)


def _locked_stage(home: Path, prefix: str) -> tuple:
    """A new temporary folder in `home`, and the descriptor holding its lock. A cleanup that took the
    lock first (the folder was not locked yet) has removed it: then another is made."""
    while True:
        try:
            stage = tempfile.mkdtemp(prefix=prefix, suffix=STAGE_SUFFIX, dir=home)
        except OSError as e:
            raise write_error(home, e) from None
        lock = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(stage) and os.path.samestat(os.stat(stage), os.fstat(lock)):
            _held_locks.add(lock)
            return Path(stage), lock
        os.close(lock)


def _publish(stage: Path, dest: Path, new: bool) -> None:
    """The files of `stage` into `dest` (see staged_folder)."""
    if new:
        try:
            os.rename(stage, dest)  # an empty folder made meanwhile is replaced; one holding files is not
        except OSError as e:
            raise KitError(f"{dest}: appeared while it was being written; nothing was put in it "
                           f"({e.strerror})") from None
        return
    names = sorted(os.listdir(stage))
    there = [n for n in names if os.path.lexists(dest / n)]
    if there:
        raise KitError(f"{dest / there[0]}: appeared while it was being written; not overwritten")
    with signals_held():
        for name in names:
            os.rename(stage / name, dest / name)


@contextlib.contextmanager
def signals_held(signums=(signal.SIGINT, signal.SIGTERM)):
    """SIGINT and SIGTERM that arrive in the block take effect after it. Only the main thread may set
    signal handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in arrived:
            signal.raise_signal(s)


def remove_stale_stages(dest) -> None:
    """Remove the temporary folders of `staged_folder(dest)` that no live process holds (killed runs)."""
    dest = Path(dest)
    for home, prefix in ((dest.parent, f".{dest.name}."), (dest, _STAGE_INSIDE)):
        if not home.is_dir():
            continue
        for entry in home.iterdir():
            if entry.name.startswith(prefix) and entry.name.endswith(STAGE_SUFFIX) and not entry.is_symlink() \
                    and entry.is_dir():
                _remove_unless_locked(entry)


def _remove_unless_locked(folder: Path) -> None:
    try:
        lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a run is writing it
        os.close(lock)
        return
    try:
        shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.close(lock)


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


def file_identity(path) -> dict:
    """A data file's identity without reading gigabytes: resolved path, size, modification time
    (a regenerated or replaced file changes size or mtime; a content hash would cost a full read)."""
    try:
        st = Path(path).stat()
    except OSError as e:
        raise KitError(f"{path}: cannot read the file ({e.strerror})") from e
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_json_object(path, what: str, missing_hint: str = "") -> dict:
    """`read_json`, and a JSON object at the top: a record read by key (a run's config.json, done.json) that
    holds a list or a number is one line naming the file, never an AttributeError where it is used."""
    content = read_json(path, what, missing_hint)
    if not isinstance(content, dict):
        raise KitError(f"{path}: {what} is not a JSON object (found a {type(content).__name__})")
    return content


@contextlib.contextmanager
def folder_lock(folder, what: str):
    """Hold `folder`/.lock (fcntl.flock, non-blocking) while a process writes the folder: a second process
    gets one line naming the folder, `what` it is and the holder's pid, instead of mixing its files with
    the first one's. The lock goes when the file closes: at the end of the block, at exit, or when the
    process dies. The file stays (removing it would let a third process lock a new file beside a holder)."""
    import fcntl

    lock_file = Path(folder) / ".lock"
    make_dir(folder)  # a folder that is a file, or under one: one line naming it
    try:
        f = open(lock_file, "a+")
    except OSError as e:
        raise KitError(f"{lock_file}: cannot create the {what}'s lock file ({e.strerror})") from e
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise KitError(f"{folder}: {what} is in use by another process (pid {holder})") from None
        f.seek(0), f.truncate(), f.write(str(os.getpid())), f.flush()
        yield
