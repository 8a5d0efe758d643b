"""Read a Fashion-Gen HDF5 file (real or generated) as products: metadata table + single-row images.

The real files (see FASHIONGEN.md) hold one row per image; the rows of a product are contiguous.
This reader reads the metadata columns once, in pieces of at most h5file.READ_BYTES, keeping only
each product's first-row values, so its memory grows with the number of products, never with what a
file declares. It decodes strings as latin-1 (UTF-8 with errors ignored silently drops accents:
"appliqué" -> "appliqu"), groups rows into products, and keeps no HDF5 handle open afterwards:
images are read one row at a time through a handle opened lazily in each process, because an h5py
handle must not cross a fork (DataLoader workers) and fancy indexing on the image array is far
slower (bench/loader.py compares the two).

Every problem a user can fix (unreadable, truncated or corrupt file, missing key, wrong dtype or
shape, a dataset declaring more than the file stores, a product split across the file, empty text,
binary strings, NaN prices) is a one-line KitError naming the file and the key. `inspect()` returns
all of them; `eiclip check-data` prints them.
"""
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from eiclip_core.data.h5file import (error_reason, link_problem, open_h5, row_pieces, storage_problem,
                                     unreadable_chunks)
from eiclip_core.errors import KitError
from eiclip_core.data.product_text import product_text

# key -> kind of content; every key of FASHIONGEN.md's table. One value per row, stored (N, 1)
# except index_2 which the real files store 1-D; the reader accepts either form for every key.
STRING_KEYS = (
    "input_name", "input_description", "input_concat_description", "input_brand", "input_category",
    "input_subcategory", "input_composition", "input_season", "input_gender", "input_department",
    "input_pose",
)
INT_KEYS = ("input_productID", "index", "index_2")
FLOAT_KEYS = ("input_msrpUSD",)
IMAGE_KEY = "input_image"
REQUIRED_KEYS = (IMAGE_KEY,) + INT_KEYS + STRING_KEYS + FLOAT_KEYS

# product-table column -> HDF5 key (the columns the kit uses; the rest of the file is only checked)
COLUMNS = {
    "name": "input_name", "description": "input_description", "brand": "input_brand",
    "category": "input_category", "subcategory": "input_subcategory",
    "composition": "input_composition", "season": "input_season", "gender": "input_gender",
    "department": "input_department",
}
_CHECK_ROWS = 65536  # rows checked at a time (see _scan_column)
# control characters other than tab/newline/carriage return mark binary junk, not text
_BINARY = bytes(sorted(set(range(0, 9)) | {11, 12} | set(range(14, 32)) | {127}))


def _decode(raw: np.ndarray) -> list[str]:
    return [(b.decode("latin-1") if isinstance(b, bytes) else str(b)).strip() for b in raw]


def _shape_problem(dset, key, n):
    shape = dset.shape
    if shape not in ((n,), (n, 1)):
        return f"key '{key}' has shape {shape}, expected ({n}, 1) (or ({n},))"
    return None


def _dtype_problem(dset, key):
    kind = dset.dtype.kind
    if key in STRING_KEYS:
        if kind == "S" or (kind == "O" and h5py.check_string_dtype(dset.dtype) is not None):
            return None
        return f"key '{key}' has dtype {dset.dtype}, expected fixed-width byte strings"
    if key in INT_KEYS and kind not in "iu":
        return f"key '{key}' has dtype {dset.dtype}, expected integers"
    if key in FLOAT_KEYS and kind not in "fiu":
        return f"key '{key}' has dtype {dset.dtype}, expected numbers"
    return None


def _as_bytes(b) -> bytes:
    return b if isinstance(b, bytes) else str(b).encode("latin-1", "replace")


def _is_binary(b: bytes) -> bool:
    """Binary junk, not text: an inner NUL byte, or over 10% control characters (a stray one in a long
    scraped description is tolerated: refusing a 13 GB download for it would help nobody)."""
    return b"\x00" in b or len(b) - len(b.translate(None, _BINARY)) > 0.1 * len(b)


def _string_problem(key, raw, offset):
    """A line naming the first binary row of a piece starting at row `offset`, else None.

    The joined piece is checked first (fast path)."""
    joined = b"".join(_as_bytes(b) for b in raw)
    if len(joined.translate(None, _BINARY)) == len(joined):
        return None
    row = next((i for i, b in enumerate(raw) if _is_binary(_as_bytes(b))), None)
    return None if row is None else f"key '{key}': row {offset + row} holds binary data (control characters), not text"


def _price_problem(key, raw, offset):
    bad = np.flatnonzero(~np.isfinite(raw.astype(np.float64)))
    return f"key '{key}': row {offset + int(bad[0])} holds a NaN or infinite price" if len(bad) else None


def _scan_column(dset, key, n, starts=None, check=None):
    """Read column `key` piece by piece: (its values at rows `starts`, or None; the first problem `check` finds).

    Only the kept values stay in memory: O(len(starts)), whatever the file declares. `check` sees
    _CHECK_ROWS rows at a time: the string check makes a Python object per row (~60 bytes for 8).
    """
    kept, problem = [], None
    for a, b in row_pieces(dset, n):
        raw = np.asarray(dset[a:b]).reshape(-1)
        if check and not problem:
            problem = next((p for i in range(0, len(raw), _CHECK_ROWS)
                            if (p := check(key, raw[i:i + _CHECK_ROWS], a + i))), None)
        if starts is not None:
            lo, hi = np.searchsorted(starts, [a, b])
            kept.append(raw[starts[lo:hi] - a])
    return (np.concatenate(kept) if starts is not None else None), problem


def _product_runs(dset, n):
    """Contiguous runs of equal product ids -> (first row of each run, its id), read piece by piece."""
    starts, run_ids, last = [], [], None
    for a, b in row_pieces(dset, n):
        ids = np.asarray(dset[a:b]).reshape(-1).astype(np.int64)
        new = np.flatnonzero(np.concatenate([[last is None or ids[0] != last], ids[1:] != ids[:-1]]))
        starts.append(new + a)
        run_ids.append(ids[new])
        last = ids[-1]
    return np.concatenate(starts).astype(np.int64), np.concatenate(run_ids)


def _split_problem(starts, run_ids):
    """A line if a product id comes back after another one (its rows are not contiguous), else None."""
    uniq, seen = np.unique(run_ids, return_counts=True)
    if not (seen > 1).any():
        return None
    pid = uniq[np.flatnonzero(seen > 1)[0]]
    where = ", ".join(str(int(s)) for s in starts[run_ids == pid][:3])
    return (f"key 'input_productID': product {int(pid)} is split across the file (runs start "
            f"at rows {where}); rows of a product must be contiguous")


def inspect(path, f=None, check_all=True, full=False, progress=False):
    """Validate an open (or openable) file; returns (problems: list[str], table: dict or None).

    `table` holds what the reader needs (decoded columns, ids, prices, grouping) when the file is
    valid. Structural problems (keys, shapes, dtypes, datasets declaring more than the file stores)
    are always all listed, before any data is read; with check_all=False (the reader's path) only
    the columns the reader uses are read, and reading stops at the first bad one. Images: the first
    and last rows are read, or with full=True every chunk (a tqdm bar when `progress`). Problems are
    lines without the file name; callers prefix it. Raises KitError for an unreadable file.
    """
    own = f is None
    if own:  # reads are whole chunks, so a chunk cache would only hold memory (HDF5 2: 8 MiB per dataset)
        f = open_h5(path, rdcc_nbytes=0)
    try:
        datasets, problems = _open_datasets(f)
        if IMAGE_KEY not in datasets:
            return problems, None
        n = datasets[IMAGE_KEY].shape[0] if datasets[IMAGE_KEY].shape else 0
        problems += _structure_problems(datasets, n, f.id.get_filesize())
        if problems:
            return problems, None
        return _read_table(datasets, n, check_all, full, progress)
    finally:
        if own:
            f.close()


_H5_ERRORS = (KeyError, OSError, RuntimeError, TypeError, ValueError)  # what h5py raises on corrupt metadata


def _open_datasets(f):
    """key -> dataset for each required key that opens; a problem line for each one that does not (a link
    is refused before it is followed: h5file.link_problem)."""
    datasets, problems = {}, []
    for k in REQUIRED_KEYS:
        try:
            link = link_problem(f, k)
            if link:
                problems.append(link)
            elif k not in f:
                problems.append(f"key '{k}' missing")
            elif not isinstance(f[k], h5py.Dataset):
                problems.append(f"key '{k}' is a group, expected a dataset")
            else:
                datasets[k] = f[k]
                datasets[k].shape, datasets[k].dtype  # parsed now: corrupt headers fail here, not mid-read
        except _H5_ERRORS as e:
            datasets.pop(k, None)
            problems.append(f"key '{k}': corrupt HDF5 metadata ({error_reason(e)})")
    return datasets, problems


def _structure_problems(datasets, n, file_size):
    """Shapes, dtypes and storage of the opened datasets; no data is read."""
    img = datasets[IMAGE_KEY]
    problems = []
    if img.ndim != 4 or img.shape[3] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
        problems.append(f"key '{IMAGE_KEY}' has shape {img.shape}, expected (N, H, W, 3)")
    if img.dtype != np.uint8:
        problems.append(f"key '{IMAGE_KEY}' has dtype {img.dtype}, expected uint8")
    for k, dset in datasets.items():
        p = None if k == IMAGE_KEY else _shape_problem(dset, k, n) or _dtype_problem(dset, k)
        try:
            p = p or storage_problem(dset, k, file_size)
        except _H5_ERRORS as e:
            p = f"key '{k}': corrupt HDF5 metadata ({error_reason(e)})"
        if p:
            problems.append(p)
    if n == 0 and not problems:
        problems.append(f"key '{IMAGE_KEY}' has no rows")
    return problems


def _read_table(datasets, n, check_all, full, progress):
    """Read the columns (and images: first and last row, or all with `full`) of a structurally valid file."""
    problems = []
    try:
        starts, run_ids = _product_runs(datasets["input_productID"], n)
        price, p = _scan_column(datasets["input_msrpUSD"], "input_msrpUSD", n, starts, _price_problem)
        problems += [p] if p else []
        strings = {}
        for k in (STRING_KEYS if check_all else tuple(COLUMNS.values())):
            kept = starts if k in COLUMNS.values() else None  # check-only columns are not kept
            strings[k], p = _scan_column(datasets[k], k, n, kept, _string_problem)
            problems += [p] if p else []
            if problems and not check_all:
                return problems, None
        if check_all:
            _scan_column(datasets["index"], "index", n)
            _scan_column(datasets["index_2"], "index_2", n)
        img = datasets[IMAGE_KEY]
        if full:
            problems += [p for p in [unreadable_chunks(img, IMAGE_KEY, n, progress)] if p]
        else:  # a truncated file often opens but fails on data far into it: touch the last image row
            img[n - 1]
            img[0]
    except OSError as e:
        return problems + [f"unreadable data ({error_reason(e)}); the file is damaged or truncated"], None
    split = _split_problem(starts, run_ids)
    if split:
        return problems + [split], None
    return _product_table(strings, starts, run_ids, price.astype(np.float64), n, img, problems)


def _product_table(strings, starts, run_ids, price, n, img, problems):
    """The reader's table from the per-product values, or the empty-text problem."""
    first = {col: _decode(strings[k]) for col, k in COLUMNS.items()}
    text = [product_text(a, b) for a, b in zip(first["name"], first["description"])]
    empty = [i for i, t in enumerate(text) if not t]
    if empty:
        problems.append(f"keys 'input_name'/'input_description': product {int(run_ids[empty[0]])} "
                        f"(row {int(starts[empty[0]])}) has empty text ({len(empty)} product(s) in all)")
    if problems:
        return problems, None
    counts = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
    return problems, dict(first, text=text, ids=run_ids, price=price, starts=starts, counts=counts,
                          image_shape=tuple(img.shape[1:]), n_rows=n)


class FashionGen:
    """One Fashion-Gen split: `products` (DataFrame, file order) and `image(row)` (uint8 (H, W, 3)).

    >>> ds = FashionGen("data/smoke/validation.h5"); len(ds), ds.products.columns.tolist()[:3]
    """

    def __init__(self, path):
        self.path = Path(path)
        problems, t = inspect(self.path, check_all=False)
        if problems:
            more = f" (and {len(problems) - 1} more; run `eiclip check-data {self.path}`)" if len(problems) > 1 else ""
            raise KitError(f"{self.path}: {problems[0]}{more}")
        self.first_row = t["starts"]  # (P,) first HDF5 row of each product
        self.n_views = t["counts"]  # (P,) rows (views) of each product, rows are contiguous
        self.image_shape = t["image_shape"]  # (H, W, 3)
        self.n_rows = t["n_rows"]
        self.products = pd.DataFrame({
            "product_id": t["ids"],
            **{col: t[col] for col in COLUMNS},
            "price": t["price"],
            # ranges, not lists: memory per product stays constant however many rows a file declares
            "rows": [range(s, s + c) for s, c in zip(self.first_row.tolist(), self.n_views.tolist())],
            "text": t["text"],
        })
        self._file, self._images, self._pid = None, None, None

    def __len__(self):
        return len(self.products)

    def _image_dataset(self):
        # one handle per process: DataLoader workers (fork) must not share the parent's handle.
        # The dataset object is kept too: looking it up by name costs more than reading a small row.
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open_h5(self.path), os.getpid()
            self._images = self._file[IMAGE_KEY]
        return self._images

    def image(self, row: int) -> np.ndarray:
        """The image of one HDF5 row as uint8 (H, W, 3), read with a single-row read."""
        row = int(row)
        if not 0 <= row < self.n_rows:
            raise IndexError(f"row {row} out of range [0, {self.n_rows})")
        try:
            return np.asarray(self._image_dataset()[row])
        except _H5_ERRORS as e:  # damaged chunk, or a file changed since it was checked
            raise KitError(f"{self.path}: key '{IMAGE_KEY}': row {row} unreadable ({error_reason(e)}); "
                           "the file is probably truncated") from None

    def close(self):
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._images, self._pid = None, None, None

    def __getstate__(self):  # pickled to spawned workers: never ship an open handle
        state = dict(self.__dict__)
        state["_file"], state["_images"], state["_pid"] = None, None, None
        return state

    def __repr__(self):
        return f"FashionGen({str(self.path)!r}, products={len(self)}, rows={self.n_rows})"
