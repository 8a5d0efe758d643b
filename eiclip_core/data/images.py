"""Catalog images -> Fashion-Gen's square uint8 images, decoded and resized in worker processes.

Decoding a photograph costs far more than writing its pixels, so images are decoded in a pool of
processes (`load_products`), one task per product (all its views), results in task order. Tasks are
fed through a throttle: at most `in_flight` products are decoded but not yet consumed, so memory
stays flat however large the catalog and however slow the writer (Pool.imap alone would queue every
result of a slow consumer).

Each image is turned the way the real Fashion-Gen 256 x 256 images look: EXIF rotation applied,
transparency flattened on white, scaled so its longer side is P pixels (up or down), and centred on a
white P x P square (product shots are on white). JPEGs are decoded at a reduced scale when that still
gives at least P pixels (Pillow's draft mode), which is most of the speed on large photographs.
"""
import multiprocessing
import signal
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)


def square_image(path, size: int) -> np.ndarray:
    """The image at `path` as uint8 (size, size, 3): longer side scaled to `size`, padded with white.

    Raises whatever Pillow raises for a missing, truncated or unrecognised file.
    """
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at the smallest scale still >= size (no-op otherwise)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, WHITE)
            im.paste(rgba, mask=rgba.getchannel("A"))
        else:
            im = im.convert("RGB")
        square = ImageOps.pad(im, (size, size), method=Image.Resampling.BICUBIC, color=WHITE)
        return np.asarray(square, dtype=np.uint8)


@dataclass(frozen=True)
class ProductImages:
    """One product's decoded views, or the first problem met (`images` is then None)."""
    index: int  # position of the product in the task list
    images: np.ndarray | None  # uint8 (views, P, P, 3)
    path: str = ""  # the image that failed
    problem: str = ""


def load_product(task) -> ProductImages:
    """Worker function: (index, paths, size) -> ProductImages; a bad image never raises here.

    Every exception of a decode is a problem of the input (Pillow raises OSError, ValueError,
    SyntaxError, DecompressionBombError... for bad files), so it is caught and reported by name.
    """
    index, paths, size = task
    views = np.empty((len(paths), size, size, 3), np.uint8)
    for k, path in enumerate(paths):
        try:
            views[k] = square_image(path, size)
        except FileNotFoundError:
            return ProductImages(index, None, str(path), "image file not found")
        except Exception as e:  # noqa: BLE001 (see docstring)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            return ProductImages(index, None, str(path), f"unreadable image ({reason})")
    return ProductImages(index, views)


class _Throttle:
    """Lets the pool's task feeder run at most `limit` tasks ahead of the consumer; stoppable."""

    def __init__(self, limit: int):
        self._slots = threading.Semaphore(limit)
        self._stopped = threading.Event()

    def feed(self, tasks):
        for task in tasks:
            while not self._slots.acquire(timeout=0.1):
                if self._stopped.is_set():
                    return
            if self._stopped.is_set():
                return
            yield task

    def done_one(self):
        self._slots.release()

    def stop(self):
        self._stopped.set()


def _ignore_sigint():
    # Ctrl-C is the parent's to handle (it removes the half-written files); workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def load_products(tasks, processes: int = 1, chunksize: int = 4, in_flight: int | None = None):
    """Yield a ProductImages per task (index, paths, size), in task order.

    processes=1 decodes in this process (the plain loop that bench/import.py compares against);
    more uses a pool of forked workers with at most `in_flight` products decoded ahead.
    """
    if processes <= 1:
        yield from map(load_product, tasks)
        return
    in_flight = in_flight or 8 * processes * chunksize
    throttle = _Throttle(in_flight)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(processes, initializer=_ignore_sigint)
    try:
        for result in pool.imap(load_product, throttle.feed(tasks), chunksize=chunksize):
            throttle.done_one()
            yield result
        pool.close()
    finally:
        throttle.stop()
        pool.terminate()
        pool.join()
