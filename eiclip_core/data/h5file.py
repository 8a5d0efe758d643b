"""Opening and reading an HDF5 file that may be damaged or hostile, with bounded memory.

A file is only a claim about its contents: a 35 MB file can declare 10^9 rows per key (chunks that
were never written read back as fill values), a chunk can be corrupt in the middle of a download, a
path named .h5 can be a FIFO that blocks whoever opens it. So, before any column is read:

- `open_h5` opens only readable regular files, and says which of "not found", "permission denied",
  "not a regular file" or "truncated or not HDF5" it is;
- `link_problem` refuses a key that is a soft or external link rather than an object of this file;
- `storage_problem` compares what a dataset declares (rows x row size) with what the file stores for
  it: every chunk written, contiguous storage covering the shape and inside the file, no external or
  virtual storage, no row above READ_BYTES nor chunk above MAX_CHUNK_BYTES;

and then every read goes through `row_pieces` (whole chunks, at most READ_BYTES or one chunk at a
time), so memory depends on what the reader keeps, never on what the file declares.
`unreadable_chunks` is the full scan of `eiclip check-data --full`: it reads every chunk and names
the rows that fail.
"""
import errno
import math
import stat
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from eiclip_core.errors import KitError

READ_BYTES = 16 << 20  # the most one read of a column or one row may take (a real image row: 192 KiB)
# Reading one row decompresses its whole chunk. h5py's automatic chunks are at most 1 MiB; an
# author's own may be larger, so the bound is generous.
MAX_CHUNK_BYTES = 256 << 20
_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
          stat.S_ISBLK: "a block device", stat.S_ISDIR: "a directory"}


def error_reason(e: Exception) -> str:
    """An h5py error in a few words: "Unable to synchronously open object: bad object header version number".

    HDF5's detail in parentheses is kept when short; the long ones ("name = ..., errno = ...") are not.
    """
    text = str(e.args[0]) if e.args else ""
    head, _, detail = text.partition("(")
    detail = detail.rsplit(")", 1)[0].strip()
    short = detail and len(detail) <= 80 and "=" not in detail
    return (f"{head.strip()}: {detail}" if short else head.strip()) or type(e).__name__


def open_h5(path, **options):
    """h5py.File(path, "r", **options) for a readable regular file; anything else is a KitError naming the file.

    The kind of file is checked before opening: opening a FIFO blocks until someone writes to it.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KitError(f"{path}: file not found") from None
    except PermissionError:
        raise KitError(f"{path}: permission denied (cannot reach the file)") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise KitError(f"{path}: is {kind}, expected a Fashion-Gen .h5 file")
    try:
        return h5py.File(path, "r", **options)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise KitError(f"{path}: permission denied (cannot read the file)") from None
        raise KitError(f"{path}: unreadable HDF5 file (truncated or not HDF5: {error_reason(e)})") from None
    except ValueError as e:
        raise KitError(f"{path}: unreadable HDF5 file (truncated or not HDF5: {error_reason(e)})") from None


def row_bytes(dset) -> int:
    """Bytes of one row (one index along the first axis)."""
    return int(np.prod(dset.shape[1:], dtype=np.int64)) * dset.dtype.itemsize


def _truncated(dset, key, end, file_size):
    if end > file_size:
        raise KitError(f"{dset.file.filename}: unreadable data (key '{key}' is stored up to byte {end}, past the "
                       f"end of the file at {file_size}); the file is truncated")


def _chunk_problem(dset, key, file_size):
    chunk_bytes = int(np.prod(dset.chunks, dtype=np.int64)) * dset.dtype.itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        return (f"key '{key}' has chunks of {chunk_bytes / 2**20:.0f} MiB, more than the "
                f"{MAX_CHUNK_BYTES >> 20} MiB the kit decompresses at once")
    written, end = 0, 0

    def visit(chunk):  # one walk of the chunk index: how many chunks, and where the last one ends
        nonlocal written, end
        written, end = written + 1, max(end, chunk.byte_offset + chunk.size)

    dset.id.chunk_iter(visit)
    _truncated(dset, key, end, file_size)
    needed = math.prod(-(-s // c) for s, c in zip(dset.shape, dset.chunks))
    if written < needed:
        return (f"key '{key}' declares {dset.shape[0]} rows but only {written} of its {needed} chunks are "
                "stored (the others were never written and would read as fill values)")
    return None


def link_problem(group, key: str):
    """A line if `key` in `group` is a link (soft, external or user-defined) rather than an object stored
    under that name in this file, else None (also when the name is absent). Asked before the key is
    opened: opening follows the link, so an external link would read another file's data as this one's
    and a soft link another key's, which is why links are refused like external storage."""
    name = key.encode()
    if not group.id.links.exists(name):
        return None
    kind = group.id.links.get_info(name).type
    if kind == h5py.h5l.TYPE_HARD:
        return None
    if kind == h5py.h5l.TYPE_EXTERNAL:
        file_name, target = group.id.links.get_val(name)
        target = f"an external link (to {file_name.decode(errors='replace')}:{target.decode(errors='replace')})"
    elif kind == h5py.h5l.TYPE_SOFT:
        target = f"a soft link (to {group.id.links.get_val(name).decode(errors='replace')})"
    else:
        target = "a user-defined link"
    return f"key '{key}' is {target}, not a dataset of this file; the kit does not follow links"


def storage_problem(dset, key: str, file_size: int):
    """A line if `dset` declares more than the file stores for it, else None; KitError if it is truncated.

    Cheap (no data is read; the chunk index is walked once), so it runs before any read. Compact
    datasets sit in their object header, which HDF5 caps at 64 KiB: nothing to compare.
    """
    if dset.is_virtual or dset.external:
        return f"key '{key}' is stored outside this file (virtual or external dataset), which the kit does not read"
    if dset.shape and row_bytes(dset) > READ_BYTES:
        return (f"key '{key}' has rows of {row_bytes(dset) / 2**20:.0f} MiB each, more than the "
                f"{READ_BYTES >> 20} MiB the kit reads at once")
    if dset.chunks is not None:
        return _chunk_problem(dset, key, file_size)
    if dset.id.get_create_plist().get_layout() == h5py.h5d.COMPACT:
        return None
    declared, stored = dset.size * dset.dtype.itemsize, dset.id.get_storage_size()
    if stored < declared:
        rows = dset.shape[0] if dset.shape else 1
        return f"key '{key}' declares {rows} rows ({declared} bytes) but the file stores {stored} bytes of them"
    _truncated(dset, key, (dset.id.get_offset() or 0) + declared, file_size)
    return None


def row_pieces(dset, n: int):
    """(start, stop) row ranges covering [0, n): whole chunks, at most READ_BYTES each (one chunk at least)."""
    step_unit = dset.chunks[0] if dset.chunks else 1
    unit_bytes = max(1, row_bytes(dset) * step_unit)
    step = step_unit * max(1, READ_BYTES // unit_bytes)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _bad_chunks(dset, start, stop):
    """(first bad row range, number of bad chunks, reason) of a piece that failed, re-read chunk by chunk.

    A contiguous dataset has no chunks: the whole piece counts as one (storage_problem has already
    refused storage past the end of the file, the usual reason for a contiguous read to fail).
    """
    per_chunk = dset.chunks[0] if dset.chunks else stop - start
    first, count, reason = None, 0, ""
    for a in range(start, stop, per_chunk):
        b = min(stop, a + per_chunk)
        try:
            dset[a:b]
        except OSError as e:
            first, count, reason = first or (a, b), count + 1, reason or error_reason(e)
    return first, count, reason


def unreadable_chunks(dset, key: str, n: int, progress: bool = True):
    """Read every row of `dset` in chunk-aligned pieces; a line naming the unreadable rows, or None.

    A piece that fails is re-read one chunk at a time, so the line gives the first bad rows and
    how many chunks fail (a damaged download is usually damaged in many places).
    """
    first, count, reason = None, 0, ""
    quiet = {} if progress else {"disable": True}  # leave TQDM_DISABLE=1 in charge otherwise
    with tqdm(total=n, desc=f"reading {key}", unit="row", mininterval=1.0, **quiet) as bar:
        for start, stop in row_pieces(dset, n):
            try:
                dset[start:stop]
            except OSError:
                f, c, r = _bad_chunks(dset, start, stop)
                first, count, reason = first or f, count + c, reason or r
            bar.update(stop - start)
    if not count:
        return None
    rows = f"row {first[0]}" if first[1] - first[0] == 1 else f"rows {first[0]}-{first[1] - 1}"
    where = f"{count} chunk(s) unreadable, first at {rows}" if dset.chunks else f"{rows} unreadable"
    return f"key '{key}': {where} ({reason}); the file is damaged"
