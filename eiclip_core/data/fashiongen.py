"""Read a Fashion-Gen HDF5 file (real or generated) as products: metadata table + single-row images.

The real files (see FASHIONGEN.md) hold one row per image; the rows of a product are contiguous.
This reader reads the string columns whole, once (32k validation rows in well under a second), decodes
them as latin-1 (UTF-8 with errors ignored silently drops accents: "appliqué" -> "appliqu"), groups
rows into products, and keeps no HDF5 handle open afterwards: images are read one row at a time
through a handle opened lazily in each process, because an h5py handle must not cross a fork
(DataLoader workers) and fancy indexing on the image array is 10 to 150 times slower.

Every problem a user can fix (unreadable or truncated file, missing key, wrong dtype or shape, a
product split across the file, empty text, binary strings, NaN prices) is a one-line KitError naming
the file and the key. `inspect()` returns all of them; `eiclip check-data` prints them.
"""
import os
from pathlib import Path

import numpy as np
import pandas as pd

from eiclip_core.errors import KitError
from eiclip_core.text import product_text

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
_CHUNK_ROWS = 65536  # rows per read of a string column (bounds memory on the 260k-row train file)
# control characters other than tab/newline/carriage return mark binary junk, not text
_BINARY = bytes(sorted(set(range(0, 9)) | {11, 12} | set(range(14, 32)) | {127}))


def open_h5(path):
    """h5py.File(path, "r") with unreadable files turned into a KitError naming the file."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise KitError(f"{path}: file not found")
    if path.is_dir():
        raise KitError(f"{path}: is a directory, expected a Fashion-Gen .h5 file")
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        reason = str(e).split("(")[0].strip() or type(e).__name__
        raise KitError(f"{path}: unreadable HDF5 file (truncated or not HDF5: {reason})") from None


def _decode(raw: np.ndarray) -> list[str]:
    return [(b.decode("latin-1") if isinstance(b, bytes) else str(b)).strip() for b in raw]


def _read_column(f, key, n):
    """The whole column `key` as a flat numpy array (n,), read in chunks; raises OSError on I/O errors."""
    dset = f[key]
    parts = [np.asarray(dset[i:i + _CHUNK_ROWS]).reshape(-1) for i in range(0, n, _CHUNK_ROWS)]
    return np.concatenate(parts) if parts else np.zeros((0,), dset.dtype)


def _shape_problem(dset, key, n):
    shape = dset.shape
    if shape not in ((n,), (n, 1)):
        return f"key '{key}' has shape {shape}, expected ({n}, 1) (or ({n},))"
    return None


def _dtype_problem(dset, key):
    import h5py

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


def _string_problems(key, raw) -> list[str]:
    """One line naming the first binary row; the joined column is checked first (fast path)."""
    joined = b"".join(_as_bytes(b) for b in raw)
    if len(joined.translate(None, _BINARY)) == len(joined):
        return []
    row = next((i for i, b in enumerate(raw) if _is_binary(_as_bytes(b))), None)
    return [] if row is None else [f"key '{key}': row {row} holds binary data (control characters), not text"]


def _group_rows(ids: np.ndarray):
    """Contiguous runs of equal product ids -> (starts, counts, problem or None if no id comes back)."""
    n = len(ids)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
    run_ids = ids[starts]
    uniq, seen = np.unique(run_ids, return_counts=True)
    if not (seen > 1).any():
        return starts, counts, None
    pid = uniq[np.flatnonzero(seen > 1)[0]]
    where = ", ".join(str(int(s)) for s in starts[run_ids == pid][:3])
    return starts, counts, (f"key 'input_productID': product {int(pid)} is split across the file (runs start "
                            f"at rows {where}); rows of a product must be contiguous")


def inspect(path, f=None, check_all=True):
    """Validate an open (or openable) file; returns (problems: list[str], table: dict or None).

    `table` holds what the reader needs (decoded columns, ids, prices, grouping) when the file is
    valid. Structural problems (keys, shapes, dtypes) are always all listed; with check_all=False
    (the reader's path) only the columns the reader uses are read, and reading stops at the first
    bad one. Problems are lines without the file name; callers prefix it.
    """
    own = f is None
    if own:
        f = open_h5(path)
    try:
        return _inspect(path, f, check_all)
    finally:
        if own:
            f.close()


def _inspect(path, f, check_all):
    missing = [k for k in REQUIRED_KEYS if k not in f]
    problems = [f"key '{k}' missing" for k in missing]
    groups = [k for k in REQUIRED_KEYS if k not in missing and not hasattr(f[k], "shape")]
    problems += [f"key '{k}' is a group, expected a dataset" for k in groups]
    if IMAGE_KEY in missing + groups:
        return problems, None
    skip = set(missing + groups)

    img = f[IMAGE_KEY]
    n = img.shape[0] if img.shape else 0
    if img.ndim != 4 or img.shape[3] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
        problems.append(f"key '{IMAGE_KEY}' has shape {img.shape}, expected (N, H, W, 3)")
    if img.dtype != np.uint8:
        problems.append(f"key '{IMAGE_KEY}' has dtype {img.dtype}, expected uint8")
    for k in REQUIRED_KEYS[1:]:
        if k in skip:
            continue
        p = _shape_problem(f[k], k, n) or _dtype_problem(f[k], k)
        if p:
            problems.append(p)
    if n == 0 and not problems:
        problems.append(f"key '{IMAGE_KEY}' has no rows")
    if problems:
        return problems, None

    try:
        # a truncated file often opens but fails on data far into it: touch the last image row
        img[n - 1]
        img[0]
        ids = _read_column(f, "input_productID", n).astype(np.int64)
        price = _read_column(f, "input_msrpUSD", n).astype(np.float64)
        keys = STRING_KEYS if check_all else tuple(COLUMNS.values())
        strings = {}
        for k in keys:
            raw = _read_column(f, k, n)
            problems += _string_problems(k, raw)
            strings[k] = raw
            if problems and not check_all:
                return problems, None
        if check_all:
            _read_column(f, "index", n)
            _read_column(f, "index_2", n)
    except OSError as e:
        reason = str(e).split("(")[0].strip() or type(e).__name__
        return problems + [f"unreadable data ({reason}); the file is probably truncated"], None

    if not np.isfinite(price).all():
        problems.append(f"key 'input_msrpUSD': row {int(np.flatnonzero(~np.isfinite(price))[0])} "
                        "holds a NaN or infinite price")
    starts, counts, split = _group_rows(ids)
    if split:
        return problems + [split], None
    first = {col: _decode(strings[k][starts]) for col, k in COLUMNS.items()}
    text = [product_text(a, b) for a, b in zip(first["name"], first["description"])]
    empty = [i for i, t in enumerate(text) if not t]
    if empty:
        problems.append(f"keys 'input_name'/'input_description': product {int(ids[starts[empty[0]]])} "
                        f"(row {int(starts[empty[0]])}) has empty text ({len(empty)} product(s) in all)")
    if problems:
        return problems, None
    return problems, dict(first, text=text, ids=ids[starts], price=price[starts], starts=starts,
                          counts=counts, image_shape=tuple(img.shape[1:]), n_rows=n)


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
            "rows": [list(range(s, s + c)) for s, c in zip(self.first_row.tolist(), self.n_views.tolist())],
            "text": t["text"],
        })
        self._file, self._images, self._pid = None, None, None

    def __len__(self):
        return len(self.products)

    def _image_dataset(self):
        # one handle per process: DataLoader workers (fork) must not share the parent's handle.
        # The dataset object is kept too: looking it up by name costs ~20x a 64 px row read.
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
        except OSError as e:
            reason = str(e).split("(")[0].strip() or type(e).__name__
            raise KitError(f"{self.path}: key '{IMAGE_KEY}': row {row} unreadable ({reason}); "
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
