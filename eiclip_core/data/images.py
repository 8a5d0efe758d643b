"""Catalog images -> Fashion-Gen's square uint8 images, decoded and resized in worker processes.

Decoding a photograph costs far more than writing its pixels, so images are decoded in a pool of
processes (`load_products`), one task per product (all its views), results in task order. The
workers write the pixels into a ring of image slots in shared memory and send back only which slots:
sending a 256 x 256 x 3 array through the pool's pipe costs each side a pickle, 64 KiB pipe writes
and copies on both ends, a sizeable share of the decode itself, and the parent's share of it is what
keeps 2 processes from being twice as fast as one on 2 cores (bench/import.py prints each process's
CPU per image). The ring also bounds the work in flight: a product is handed to a worker only when
slots are free, so memory stays flat however large the catalog and however slow the writer
(Pool.imap alone would queue every result of a slow consumer).

A worker that dies (the out-of-memory killer, a SIGKILL) takes its tasks with it and the pool would
wait for them forever: the parent watches its workers while it waits and stops with one line.

Each image is turned the way the real Fashion-Gen 256 x 256 images look: EXIF rotation applied,
converted to 8-bit RGB by its mode (16-bit greys scaled, transparency flattened on white), scaled
so its longer side is P pixels (up or down; the shorter one keeps at least a pixel), and centred on
a white P x P square (product shots are on white). JPEGs are decoded at a reduced scale when that
still gives at least P pixels (Pillow's draft mode), which is most of the speed on large photographs.
"""
import collections
import itertools
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np
from PIL import Image, ImageOps

from eiclip_core.errors import KitError

WHITE = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose follows
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # greys of 16 bits ("I": 32-bit, read as 16-bit greys)
_ALPHA = ("RGBA", "LA", "PA", "RGBa")
WATCH_SECONDS = 1.0  # how often the parent checks its decoding workers while it waits for one


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and schedulers restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def draft_size(image_size: tuple, size: int) -> tuple:
    """The (w, h) to ask Pillow's draft mode for so that the decoded longer side stays >= size.

    Draft picks the largest JPEG scale 1/s with w/s >= asked w and h/s >= asked h; asking (size, size)
    would keep the shorter side >= size too, which for a 500 x 750 photo and P = 256 means no reduction
    at all. Only the longer side matters here (the shorter one is padded), so the image's own aspect
    ratio is asked for, and the resize to P then starts from at most 2x the pixels it keeps.
    """
    longer = max(image_size)
    return tuple(max(1, -(-side * size // longer)) for side in image_size)


def scaled_size(width: int, height: int, size: int) -> tuple:
    """(w, h) of a width x height image with its longer side scaled to `size`, rounded as ImageOps.pad does."""
    if width > height:
        return size, max(1, round(height / width * size))
    if width < height:
        return max(1, round(width / height * size)), size
    return size, size


def as_rgb(im: Image.Image) -> Image.Image:
    """`im` as 8-bit RGB by its mode: 16-bit greys scaled to 8 bits (a plain convert clips them, and a
    16-bit PNG comes out white), transparency flattened on white, every other mode converted."""
    if im.mode in _SIXTEEN_BIT:
        greys = np.asarray(im, dtype=np.int64).clip(0, 65535)
        im = Image.fromarray(((greys + 128) // 257).astype(np.uint8), "L")  # 257 x g -> g: 8-bit greys kept
    if im.mode in _ALPHA or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def square_image(path, size: int) -> np.ndarray:
    """The image at `path` as uint8 (size, size, 3): longer side scaled to `size`, padded with white.

    Raises whatever Pillow raises for a missing, truncated or unrecognised file.
    """
    with Image.open(path) as im:
        width, height = im.size
        if im.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # exif_transpose turns these a quarter
            width, height = height, width
        im.draft("RGB", draft_size(im.size, size))  # JPEG: decoded at 1/2, 1/4 or 1/8 when that is enough
        im = as_rgb(ImageOps.exif_transpose(im))
        # scaled to the size the full image would get (a draft's sides are rounded up, its aspect
        # ratio is not quite the image's), then centred by pad, which has nothing left to scale
        im = im.resize(scaled_size(width, height, size), Image.Resampling.BICUBIC)
        square = ImageOps.pad(im, (size, size), method=Image.Resampling.BICUBIC, color=WHITE)
        return np.asarray(square, dtype=np.uint8)


@dataclass(frozen=True)
class ProductImages:
    """One product's decoded views, or the first problem met (`images` is then None)."""
    index: int  # position of the product in the task list
    images: np.ndarray | None  # uint8 (views, P, P, 3)
    path: str = ""  # the image that failed
    problem: str = ""
    slots: tuple = ()  # from a pool worker: (start, stop) of the shared slots holding the views


_worker_slots = None  # in a pool worker: the shared (n_slots, P, P, 3) array the parent reads the views from


def load_product(task) -> ProductImages:
    """Worker function: (index, paths, size[, first slot]) -> ProductImages; a bad image never raises here.

    With a first slot (pool workers), view k goes to shared slot first + k and only the slot range is
    returned. Every exception of a decode is a problem of the input (Pillow raises OSError, ValueError,
    SyntaxError, DecompressionBombError... for bad files), so it is caught and reported by name.
    """
    index, paths, size, *first = task
    if first:
        views = _worker_slots[first[0]:first[0] + len(paths)]
    else:
        views = np.empty((len(paths), size, size, 3), np.uint8)
    for k, path in enumerate(paths):
        try:
            views[k] = square_image(path, size)
        except FileNotFoundError:
            return ProductImages(index, None, str(path), "image file not found")
        except Exception as e:  # noqa: BLE001 (see docstring)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            return ProductImages(index, None, str(path), f"unreadable image ({reason})")
    if first:
        return ProductImages(index, None, slots=(first[0], first[0] + len(paths)))
    return ProductImages(index, views)


class _SlotRing:
    """Image slots in shared memory, lent to products in task order and given back in the same order
    (the pool returns results in task order), so the slots in use are one contiguous arc of the ring;
    a product's views get contiguous slots (the end of the ring is skipped when they do not fit)."""

    def __init__(self, n_slots: int, size: int):
        self.n_slots = n_slots
        self.memory = shared_memory.SharedMemory(create=True, size=n_slots * size * size * 3)
        self.images = np.ndarray((n_slots, size, size, 3), np.uint8, buffer=self.memory.buf)
        self._head, self._in_use = 0, 0  # next slot to lend; slots lent, skipped ones included
        self._lent = collections.deque()  # slots taken by each product lent, oldest first
        self._changed = threading.Condition()
        self._stopped = False

    def lend(self, k: int):
        """First of k contiguous free slots, waiting for them; None once stopped."""
        with self._changed:
            while not self._stopped:
                if self._in_use == 0:
                    self._head = 0
                skip = self.n_slots - self._head if self._head + k > self.n_slots else 0
                if self._in_use + skip + k <= self.n_slots:
                    start = 0 if skip else self._head
                    self._head, self._in_use = (start + k) % self.n_slots, self._in_use + skip + k
                    self._lent.append(skip + k)
                    return start
                self._changed.wait(0.1)
            return None

    def give_back(self) -> None:
        """The slots of the oldest product lent are free again."""
        with self._changed:
            self._in_use -= self._lent.popleft()
            self._changed.notify()

    def feed(self, tasks):
        """The tasks with their first slot, each as soon as its slots are free."""
        for index, paths, size in tasks:
            start = self.lend(len(paths))
            if start is None:
                return
            yield index, paths, size, start

    def close(self) -> None:
        """Stop lending and free the shared memory; views of it must be gone (closing raises otherwise)."""
        with self._changed:
            self._stopped = True
        self.images = None
        self.memory.close()
        self.memory.unlink()


def _start_worker(memory, shape):
    global _worker_slots
    # Ctrl-C is the parent's to handle (it removes the half-written files); workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_slots = np.ndarray(shape, np.uint8, buffer=memory.buf)


def load_products(tasks, processes: int = 1, chunksize: int = 16, in_flight: int | None = None):
    """Yield a ProductImages per task (index, paths, size), in task order.

    processes=1 decodes in this process (the plain loop that bench/import.py compares against);
    more uses a pool of forked workers with at most `in_flight` images (or one product's, if more)
    decoded ahead, handed out `chunksize` products a message (16 rather than 4: a quarter of the pool's
    messages, and so less of the parent's CPU per image, which bench/import.py prints).
    A result's `images` are valid until the next result is asked for (the consumer copies them, as
    FashionGenWriter.add does).
    """
    tasks = list(tasks)  # (index, paths, size): small; the largest product sets the least ring size
    processes = min(processes, len(tasks))  # a worker without a product would only wait
    if processes <= 1:
        yield from map(load_product, tasks)
        return
    n_slots = max([in_flight or 8 * processes * chunksize] + [len(paths) for _, paths, _ in tasks])
    ring = _SlotRing(n_slots, tasks[0][2])
    # a product's views are copied out of the ring into this array, reused: no view of the ring outlives
    # it (see _SlotRing.close), and no new array (and its page faults) per product
    out = np.empty((max(len(paths) for _, paths, _ in tasks),) + ring.images.shape[1:], np.uint8)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    before = set(multiprocessing.active_children())
    pool = multiprocessing.get_context(method).Pool(processes, initializer=_start_worker,
                                                    initargs=(ring.memory, ring.images.shape))
    workers = [p for p in multiprocessing.active_children() if p not in before]  # started by Pool()
    try:
        # chunks made here rather than by imap(chunksize=...), whose results (a generator) cannot be
        # waited for with a timeout
        chunks = pool.imap(_load_chunk, _chunked(ring.feed(tasks), chunksize))
        for result in _watched(chunks, workers):
            if result.slots:
                start, stop = result.slots
                np.copyto(out[:stop - start], ring.images[start:stop])
                result = ProductImages(result.index, out[:stop - start])
            yield result
            ring.give_back()
        pool.close()
    finally:
        ring.close()
        pool.terminate()
        pool.join()


def _chunked(tasks, size: int):
    """Lists of `size` tasks (the last may be shorter), each taken from `tasks` only when needed."""
    tasks = iter(tasks)
    while chunk := list(itertools.islice(tasks, size)):
        yield chunk


def _load_chunk(tasks: list) -> list:
    return [load_product(task) for task in tasks]


def _watched(chunks, workers: list):
    """The results of the pool's chunks, in order, checking every WATCH_SECONDS of waiting that no worker
    has died: the pool replaces a dead worker but not the tasks it held, whose results would never come."""
    while True:
        try:
            yield from chunks.next(timeout=WATCH_SECONDS)
        except StopIteration:
            return
        except multiprocessing.TimeoutError:
            dead = next((p for p in workers if p.exitcode is not None), None)
            if dead is not None:
                raise KitError(f"an image decoding process (pid {dead.pid}) {_death(dead.exitcode)}; the "
                               "out-of-memory killer? try fewer --processes or a smaller --image-size") from None


def _death(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
