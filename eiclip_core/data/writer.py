"""Write a Fashion-Gen split product by product: images streamed in chunks, text at the end, atomically.

`FashionGenWriter` is the general-purpose writer of the schema the reader checks (fashiongen.py):
`input_image` (N, P, P, 3) uint8; `input_productID`, `index` (N, 1) and `index_2` (N,) integers; the
eleven text keys (N, 1) fixed-width latin-1 byte strings; `input_msrpUSD` (N, 1) float32; one row per
image, the rows of a product contiguous. Images go to a resizable dataset chunked one row per chunk
(the reader reads one row at a time) through a small buffer, so memory does not grow with the
number of images. Nor with the text: a text column's fixed width is its longest value, known only at
the end, so each value is spilled to an anonymous temporary file beside the output (`_TextSpill`) and
read back by `finish`, which writes the columns in slices of at most SLICE_BYTES. What stays in memory
is a product's id and view count (16 bytes).

A fixed width gives every row the longest value's bytes: one 10 MB description would make each row
of its column 10 MB. So a column whose longest value is over WIDE_TEXT_BYTES is stored as
variable-length strings (which the reader accepts too), each row holding its own value; columns of
product-sized text keep the fixed width of the real files.

The file is written under a temporary name beside the destination and renamed over it only when
complete (eiclip_core.io.atomic_path): an interrupted or failed write leaves no half-written file.
Same products in the same order give the same bytes (no timestamps, fixed creation properties).

    with open_writer("out/train.h5", image_size=256) as w:
        w.add(product_id=17, views=views, text={"name": "Red shirt", "description": "..."})
"""
import array
import contextlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from eiclip_core.data.fashiongen import IMAGE_KEY, STRING_KEYS
from eiclip_core.io import atomic_path

# text key of a product record -> HDF5 key; `concat_description` and `pose` are optional
TEXT_KEYS = {key[len("input_"):]: key for key in STRING_KEYS}
WRITEBACK_BYTES = 256 * 2 ** 20  # images written between two requests to start writing them to disk
# far above any product's text, and where a fixed-width column of 200k rows would take 3 GB
WIDE_TEXT_BYTES = 16 << 10
SLICE_BYTES = 64 << 20  # the most of a text column held at once while it is written
_VLEN_ROW_BYTES = 48  # what HDF5 adds per variable-length value: a 16-byte reference and a heap object header


def text_column_bytes(lengths: np.ndarray, views: np.ndarray) -> int:
    """Bytes a text column takes in the file as FashionGenWriter stores it, from each product's value
    length and number of views (one row per view)."""
    width = int(lengths.max(initial=0))
    if width <= WIDE_TEXT_BYTES:
        return int(views.sum()) * max(1, width)
    return int((lengths * views).sum()) + _VLEN_ROW_BYTES * int(views.sum())


@contextlib.contextmanager
def open_writer(dest, image_size: int, buffer_rows: int = 64):
    """A FashionGenWriter on a temporary file, renamed to `dest` when the block ends without error."""
    import h5py

    with atomic_path(dest) as tmp:
        # fixed creation properties and no timestamps: the same products give the same bytes
        # no chunk cache (rdcc_nbytes=0): each image is one whole chunk, written from the buffer without a
        # copy through HDF5's cache; what HDF5 still keeps, the chunk index's metadata, levels off
        # (bench/import.py prints the parent's memory through a run)
        with (h5py.File(tmp, "w", libver="earliest", track_order=False, rdcc_nbytes=0) as f,
              _TextSpill(TEXT_KEYS.values(), Path(tmp).parent) as spill):
            writer = FashionGenWriter(f, image_size, spill, buffer_rows)
            yield writer
            writer.finish()


class _TextSpill:
    """Each text key's values, in product order, as length-prefixed records in an anonymous temporary file
    (gone when closed, or when the process dies), with the longest value's length."""

    def __init__(self, keys, folder):
        self._files = {key: tempfile.TemporaryFile(dir=folder, buffering=1 << 20) for key in keys}
        self.width = dict.fromkeys(keys, 0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for f in self._files.values():
            f.close()

    def add(self, key: str, value: bytes) -> None:
        self._files[key].write(struct.pack("<I", len(value)) + value)
        self.width[key] = max(self.width[key], len(value))

    def values(self, key: str, n: int):
        """The n values of `key` in the order added."""
        f = self._files[key]
        f.seek(0)
        for _ in range(n):
            yield f.read(struct.unpack("<I", f.read(4))[0])


class FashionGenWriter:
    """One split file being written (see open_writer): `add` products in file order."""

    def __init__(self, h5file, image_size: int, spill: _TextSpill, buffer_rows: int = 64):
        self.size = int(image_size)
        self._file = h5file
        self._images = h5file.create_dataset(
            IMAGE_KEY, shape=(0, self.size, self.size, 3), maxshape=(None, self.size, self.size, 3),
            chunks=(1, self.size, self.size, 3), dtype=np.uint8, track_times=False)
        self._buffer = np.empty((buffer_rows, self.size, self.size, 3), np.uint8)
        self._buffered = 0
        self.n_rows = 0  # image rows written or buffered
        self._ids, self._views = array.array("q"), array.array("q")  # per product
        self._text = spill

    @property
    def n_products(self) -> int:
        return len(self._ids)

    def add(self, product_id: int, views: np.ndarray, text: dict) -> None:
        """Append one product: its views (k, P, P, 3) uint8 and its text (keys of TEXT_KEYS, latin-1)."""
        if views.ndim != 4 or views.shape[1:] != (self.size, self.size, 3) or len(views) == 0:
            raise ValueError(f"views of product {product_id} have shape {views.shape}, "
                             f"expected (k >= 1, {self.size}, {self.size}, 3)")
        unknown = set(text) - set(TEXT_KEYS)
        if unknown:
            raise ValueError(f"unknown text key(s) {sorted(unknown)}")
        for view in views:
            if self._buffered == len(self._buffer):
                self._flush()
            self._buffer[self._buffered] = view
            self._buffered += 1
        self.n_rows += len(views)
        self._ids.append(int(product_id))
        self._views.append(len(views))
        for field, key in TEXT_KEYS.items():
            self._text.add(key, text.get(field, "").encode("latin-1"))

    def _flush(self) -> None:
        start = self._images.shape[0]
        self._images.resize(start + self._buffered, axis=0)
        self._images[start:start + self._buffered] = self._buffer[:self._buffered]
        self._buffered = 0
        every = max(1, WRITEBACK_BYTES // self._buffer[0].nbytes)  # rows
        if self._images.shape[0] // every > start // every:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Have the kernel start writing the file's dirty pages to disk now, without waiting for them.

        Otherwise it starts only once a tenth of the machine's memory is dirty, and the final fsync
        (io.atomic_path) then waits for every image at once, with the decoding processes idle.
        POSIX_FADV_DONTNEED also drops the pages already on disk, so the output does not crowd the
        page cache. Linux only: elsewhere the final fsync does it all."""
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._file.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_DONTNEED)

    def finish(self) -> None:
        """Write the last images and every per-row column (called by open_writer)."""
        if self._buffered:
            self._flush()
        views = np.frombuffer(self._views, dtype=np.int64)
        ids = np.repeat(np.frombuffer(self._ids, dtype=np.int64), views)
        id_dtype = np.int32 if ids.size == 0 or np.abs(ids).max() < 2 ** 31 else np.int64
        put = lambda key, arr: self._file.create_dataset(key, data=arr, track_times=False)  # noqa: E731
        put("input_productID", ids.astype(id_dtype).reshape(-1, 1))
        for key in TEXT_KEYS.values():
            self._put_strings(key, self._text.values(key, len(views)), views)
        put("input_msrpUSD", np.zeros((self.n_rows, 1), np.float32))  # prices are not imported: 0 = unknown
        put("index", np.arange(self.n_rows, dtype=np.int64).reshape(-1, 1))
        put("index_2", np.arange(self.n_rows, dtype=np.int64))  # 1-D, as in the real files

    def _put_strings(self, key: str, per_product, views: np.ndarray, slice_rows: int = 65536) -> None:
        """(N, 1) byte strings, one per row (a product's value on each of its rows): fixed-width, or
        variable-length over WIDE_TEXT_BYTES (see the module docstring); written in slices so that a
        long column of long descriptions is never held whole."""
        import h5py

        width = max(1, self._text.width[key])
        dtype = f"S{width}" if width <= WIDE_TEXT_BYTES else h5py.string_dtype("ascii")  # bytes kept as they are
        dset = self._file.create_dataset(key, shape=(self.n_rows, 1), dtype=dtype, track_times=False)
        slice_rows = max(1, min(slice_rows, SLICE_BYTES // width))
        per_row = (b for b, k in zip(per_product, views) for _ in range(k))
        for start in range(0, self.n_rows, slice_rows):
            block = [next(per_row) for _ in range(min(slice_rows, self.n_rows - start))]
            dset[start:start + len(block)] = np.array(block, dtype=dset.dtype).reshape(-1, 1)
