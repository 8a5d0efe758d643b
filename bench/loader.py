"""Images per second of the training DataLoader versus a naive h5py loop, on the same generated file.

The kit's loader (eiclip_core.data.TrainDataset) reads one HDF5 row per item through a handle opened
lazily in each of 2 DataLoader workers and applies the open_clip training preprocess there. The
naive baseline is what one writes first: per batch, one fancy-indexed h5py read of the batch's rows
(indices sorted, as h5py requires), then the same preprocess in the main process. Goal: the loader is
never the bottleneck of a training step (compare with the train step's samples/s in done.json).

    python bench/loader.py                      # generates data/quick/ if missing
    python bench/loader.py --data data/quick/train.h5 --batches 40 --workers 2
"""
import argparse
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from open_clip.transform import image_transform
from PIL import Image
from torch.utils.data import DataLoader

from eiclip_core.data import FashionGen, TrainDataset


def kit_loader(path, transform, batch_size, batches, workers):
    ds = TrainDataset(path, transform, seed=0)
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), drop_last=True)
    it = iter(loader)
    next(it)  # steady state: worker start-up (a fork, once per epoch) is not counted
    t0, n = time.perf_counter(), 0
    for _ in range(batches - 1):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t0)


def naive_loader(path, transform, batch_size, batches):
    ds = TrainDataset(path, transform, seed=0)  # same view choice, read the naive way
    order = np.random.default_rng(0).permutation(len(ds))
    t0, n = time.perf_counter(), 0
    with h5py.File(path, "r") as f:
        images = f["input_image"]
        for k in range(batches):
            if k == 1:
                t0, n = time.perf_counter(), 0  # same steady-state window as the kit loader
            rows = np.sort([ds.view_row(i) for i in order[k * batch_size:(k + 1) * batch_size]])
            block = images[rows]  # one fancy-indexed read per batch
            x = torch.stack([transform(Image.fromarray(im)) for im in block])
            n += len(x)
    return n / (time.perf_counter() - t0)


def chunked_copy(src: Path, dest: Path) -> Path:
    """The same file with images chunked one row per chunk and gzip-compressed: the layout we assume
    for the real download (13.3 GB for 51 GB of pixels, so it is compressed; chunking not confirmed)."""
    if dest.exists():
        return dest
    with h5py.File(src, "r") as f, h5py.File(dest, "w") as g:
        for key in f:
            if key != "input_image":
                g.create_dataset(key, data=f[key][()])
        img = f["input_image"]
        out = g.create_dataset("input_image", shape=img.shape, dtype=img.dtype, chunks=(1,) + img.shape[1:],
                               compression="gzip", compression_opts=4)
        for i in range(0, img.shape[0], 1024):
            out[i:i + 1024] = img[i:i + 1024]
    return dest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quick/train.h5")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1], help="DataLoader workers to try")
    args = parser.parse_args()
    path = Path(args.data)
    if not path.exists():
        from eiclip_core.pipeline.synth_command import generate_profile_data

        print(f"generating {path.parent} (quick profile) ...")
        generate_profile_data(path.parent, "quick", seed=0)
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    ds = FashionGen(path)
    dt = time.perf_counter() - t0
    print(f"metadata: {ds.n_rows} rows, {len(ds)} products read in {dt:.2f} s "
          f"({ds.n_rows / dt:,.0f} rows/s; the real validation file has 32,528 rows)")

    batches = min(args.batches, len(ds) // args.batch_size)
    print(f"{path}: {ds.image_shape[0]} px images, batch {args.batch_size}, {batches} batches, "
          f"{torch.multiprocessing.cpu_count()} CPUs")
    cases = [(f"open_clip train preprocess {s} px", image_transform(s, is_train=True)) for s in (64, 224)]
    cases.append(("read only (no preprocess)", lambda im: torch.from_numpy(np.array(im))))
    chunked = chunked_copy(path, path.with_name(path.stem + ".chunked-gzip.h5"))
    for layout, file in (("contiguous (as generated)", path), ("chunked+gzip (like the download)", chunked)):
        print(f"-- {layout}")
        for label, transform in cases:
            naive = naive_loader(file, transform, args.batch_size, batches)
            print(f"{label}: naive (one fancy-indexed read per batch) {naive:7.0f} images/s")
            for w in args.workers:
                kit = kit_loader(file, transform, args.batch_size, batches, w)
                print(f"{label}: kit loader, {w} worker(s) {kit:7.0f} images/s | ratio to naive {kit / naive:.2f}x")


if __name__ == "__main__":
    main()
