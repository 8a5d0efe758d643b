"""Images per second of `eiclip import-catalog` with 2 decoding processes against 1, and its peak memory.

The same generated catalog (N products, one JPEG path each, in a CSV table with a mapping) is
imported twice with the real command in a subprocess: `--processes 1` (the plain loop: decode,
resize, write, one image after the other) and `--processes 2` (decoding in 2 worker processes,
writing in the parent). Goal: at least 1.7x on 2 cores. The process tree is sampled every 50 ms for
the resident memory of the parent and of the workers; memory flat means the parent's RSS at the end
of the run is about what it is a quarter of the way in, whatever N. The same samples give each
process's CPU seconds (user + system, last value seen before it exits), per image: unlike images/s,
they hardly change when other jobs share the machine, and with 2 cores the parent's share is what
keeps the ratio under 2 (the ceiling printed is 1-process CPU / max(parent, all / 2)). The machine's
own counters give what was spent outside the command's processes during each run, mostly the kernel
writing the output to disk, and what the hypervisor took: in the 2-process run both come out of the
decoders' two cores, while the 1-process run leaves them a free one.

What is measured is decoding, resizing and writing, not reading from disk: only `--pool` distinct
photos are rendered (1000 by default) and the other paths are hard links to them (path i -> photo
i % pool), so the files repeat content and, at a few tens of MB, stay in the page cache. Each image
is still opened and decoded from its own path (the importer keeps no cache of its own).

    python bench/import.py                    # 50,000 paths to 1000 photos (cached in the temp folder, about
                                              # 60 MB; each import writes about 10 GB, removed after it)
    python bench/import.py --n 500 --pool 100 # a quick check that it runs
"""
import argparse
import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20


def _photo(task):
    """A product-shot-like JPEG: a shaded garment shape on white, with noise so it compresses like a photo."""
    i, path, (w, h) = task
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:h, 0:w]
    body = ((x - w / 2) / (0.3 * w)) ** 2 + ((y - h / 2) / (0.4 * h)) ** 2 < 1
    colour = rng.integers(20, 235, 3)
    shade = 0.75 + 0.25 * np.sin(x / (5 + i % 7)) * np.cos(y / 9)
    pixels = np.where(body[..., None], colour * shade[..., None], 255.0) + rng.normal(0, 6, (h, w, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=88)


def catalog(n: int, size: tuple, cache: Path, pool: int) -> tuple:
    """(table, images folder, mapping) of n generated products; generated once per (n, size, pool).

    Only the first `pool` photos are rendered (in worker processes); product i >= pool gets a hard link
    to photo i % pool: its own path, no extra disk, and no rendering beyond the pool, which is what a
    large N would otherwise spend its time on. The marker `done` is written last, so an interrupted
    generation is redone rather than reused.
    """
    folder = cache / f"catalog-{n}-{size[0]}x{size[1]}-pool{pool}"
    table, mapping = folder / "products.csv", folder / "mapping.json"
    if (folder / "done").exists():
        return table, folder / "images", mapping
    shutil.rmtree(folder, ignore_errors=True)
    paths = [folder / "images" / f"{i // 1000:03d}" / f"{i}.jpg" for i in range(n)]
    for d in sorted({p.parent for p in paths}):
        d.mkdir(parents=True)
    t0 = time.perf_counter()
    with multiprocessing.Pool() as workers:
        for _ in workers.imap_unordered(_photo, [(i, paths[i], size) for i in range(min(n, pool))], chunksize=16):
            pass
    for i in range(pool, n):
        os.link(paths[i % pool], paths[i])
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sku", "title", "description", "brand", "image"])
        for i, path in enumerate(paths):
            w.writerow([f"SKU{i}", f"Product {i}", f"A generated product shot, number {i}.", f"Brand {i % 40}",
                        str(path.relative_to(folder / "images"))])
    mapping.write_text(json.dumps({"product_id": "sku", "name": "title", "description": "description",
                                   "brand": "brand", "image": "image"}))
    (folder / "done").touch()
    print(f"generated {min(n, pool)} distinct JPEGs of {size[0]}x{size[1]} and {max(0, n - pool)} hard links to "
          f"them in {time.perf_counter() - t0:.0f} s under {folder}")
    return table, folder / "images", mapping


def run_import(table, images, mapping, out: Path, processes: int, image_size: int) -> dict:
    """Run the command; return seconds and the sampled memory of the parent and of its workers."""
    cmd = [sys.executable, "-m", "eiclip_core.cli", "import-catalog", str(table), "--images", str(images),
           "--out", str(out), "--map", str(mapping), "--processes", str(processes), "--image-size", str(image_size)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    samples, stop = [], threading.Event()  # (seconds, parent RSS, workers' RSS summed, largest worker)
    cpu = {}  # pid -> CPU seconds (user + system) last seen; the parent under key "parent"
    machine0, bench0 = psutil.cpu_times(), psutil.Process().cpu_times()
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample():
        while not stop.is_set():
            try:
                children = proc.children(recursive=True)
                workers = [c.memory_info().rss for c in children]
                parent = proc.memory_info().rss
                if parent:  # 0 once the command has exited
                    samples.append((time.perf_counter() - t0, parent, sum(workers), max(workers, default=0)))
                    times = proc.cpu_times()
                    cpu["parent"] = times.user + times.system
                for c in children:
                    times = c.cpu_times()
                    cpu[c.pid] = times.user + times.system
            except psutil.Error:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    machine = _busy_and_stolen(machine0, psutil.cpu_times())
    bench = sum(psutil.Process().cpu_times()[:2]) - sum(bench0[:2])  # this script's sampler, user + system
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {stderr.strip()}")
    rows = np.array(samples) if samples else np.zeros((1, 4))
    marks = [rows[min(len(rows) - 1, int(q * len(rows)))][1] / MIB for q in (0.25, 0.5, 0.75, 0.999)]
    return {"seconds": seconds, "parent": rows[:, 1].max() / MIB, "workers": rows[:, 2].max() / MIB,
            "largest_worker": rows[:, 3].max() / MIB, "parent_over_time": marks, "stdout": stdout,
            "parent_cpu": cpu.get("parent", 0.0), "workers_cpu": sum(v for k, v in cpu.items() if k != "parent"),
            "machine_busy": machine[0] - bench, "stolen": machine[1]}


def _busy_and_stolen(before, after) -> tuple:
    """(CPU seconds the whole machine was busy, seconds the hypervisor took) between two psutil.cpu_times():
    busy minus the command's own processes and this script is what the kernel (page-cache writeback of the
    output) and anything else spent, on the same 2 cores."""
    delta = {k: getattr(after, k) - getattr(before, k) for k in after._fields}
    idle = delta["idle"] + delta.get("iowait", 0.0)
    stolen = delta.get("steal", 0.0)
    return sum(delta.values()) - idle - stolen - delta.get("guest", 0.0) - delta.get("guest_nice", 0.0), stolen


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50000, help="generated products (one JPEG each)")
    ap.add_argument("--pool", type=int, default=1000, help="distinct photos rendered; the other paths link to them")
    ap.add_argument("--jpeg-size", default="500x750", help="WxH of the generated photos")
    ap.add_argument("--image-size", type=int, default=256, help="P of the imported P x P images")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "eiclip-bench-import"))
    args = ap.parse_args()
    if args.pool < 1:
        ap.error("--pool must be at least 1")
    size = tuple(int(v) for v in args.jpeg_size.split("x"))
    table, images, mapping = catalog(args.n, size, Path(args.cache), args.pool)
    runs = {}
    for k in (1, args.processes):
        work = Path(tempfile.mkdtemp(prefix="eiclip-import-"))  # 50k images at 256 px: about 10 GB a run
        try:
            runs[k] = run_import(table, images, mapping, work / "out", k, args.image_size)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    one, many = runs[1], runs[args.processes]
    rate = {k: args.n / r["seconds"] for k, r in runs.items()}
    print(f"import of {args.n} JPEG paths ({size[0]}x{size[1]}) to {args.image_size}x{args.image_size}, "
          "whole command (start-up, table, decode, write):")
    print(f"  (files: {min(args.n, args.pool)} distinct photos, the other paths hard links to them; read from the "
          "page cache, so decoding is the cost measured, not disk reads)")
    print(f"  1 process:   {rate[1]:7.1f} images/s ({one['seconds']:.1f} s)")
    print(f"  {args.processes} processes: {rate[args.processes]:7.1f} images/s ({many['seconds']:.1f} s), "
          f"{rate[args.processes] / rate[1]:.2f}x the one-process loop (goal >= 1.7x with 2)")
    ms = {k: (1000 * r["parent_cpu"] / args.n, 1000 * r["workers_cpu"] / args.n) for k, r in runs.items()}
    for k, (parent, workers) in ms.items():
        print(f"  CPU per image with {k} process(es): parent {parent:.2f} ms, workers {workers:.2f} ms "
              f"(whole command: {parent + workers:.2f} ms)")
    for k, r in runs.items():
        outside = r["machine_busy"] - r["parent_cpu"] - r["workers_cpu"]
        print(f"  CPU per image outside the command's processes with {k} process(es) (kernel writeback, other jobs): "
              f"{1000 * outside / args.n:.2f} ms; stolen by the hypervisor: {1000 * r['stolen'] / args.n:.2f} ms")
    parent, workers = ms[args.processes]
    ceiling = sum(ms[1]) / max(parent, (parent + workers) / 2, 1e-9)
    print(f"  CPU-time ceiling of the ratio on 2 free cores: {ceiling:.2f}x (load-independent; wall clock is lower "
          "by whatever else runs)")
    for k, r in runs.items():
        over = ", ".join(f"{m:.0f}" for m in r["parent_over_time"])
        print(f"  peak RSS with {k} process(es): parent {r['parent']:.0f} MiB, workers {r['workers']:.0f} MiB "
              f"in all (largest {r['largest_worker']:.0f} MiB, shared pages counted); parent at 25/50/75/100% of the run: {over} MiB")


if __name__ == "__main__":
    main()
