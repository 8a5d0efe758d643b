"""Peak memory of `check-data` on compression bombs: files whose every chunk is written, gzip'd zeros.

Such a file passes the storage checks (nothing is missing: it really holds N rows, in a few MB), so
it is the reading that must stay bounded: columns are read in pieces of at most 16 MiB and only the
products' values are kept (here one product, all rows share id 0). For each N the bench writes the
file, then runs `fashiongen.inspect(check_all=True)` in a fresh process and prints its peak RSS,
beside the peak of the same process that only imports, and of one that reads one string column
whole (what a reader holding its string columns whole would need for each). Goal: the kit's peak
stays flat as N grows.

    python bench/hostile_memory.py                      # N = 1M, 4M, 16M rows
    python bench/hostile_memory.py --rows 1000000 64000000
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from eiclip_core.data.fashiongen import IMAGE_KEY, INT_KEYS, REQUIRED_KEYS, STRING_KEYS

PIECE = 1 << 20  # rows written at a time


def write_bomb(path: Path, n: int) -> None:
    """Every required key with n rows of zeros (strings of 8 spaces), gzip-chunked, every chunk written."""
    row_shape = {IMAGE_KEY: (1, 1, 3)}
    dtype = {**{k: "S8" for k in STRING_KEYS}, **{k: np.int64 for k in INT_KEYS}, IMAGE_KEY: np.uint8,
             "input_msrpUSD": np.float32}
    with h5py.File(path, "w") as f:
        for key in REQUIRED_KEYS:
            shape = (n,) + row_shape.get(key, () if key == "index_2" else (1,))
            value = b"Shirt   " if key in STRING_KEYS else 0
            dset = f.create_dataset(key, shape=shape, dtype=dtype[key], chunks=(65536,) + shape[1:],
                                    compression="gzip")
            block = np.full((PIECE,) + shape[1:], value, dtype=dtype[key])
            for start in range(0, n, PIECE):
                dset[start:min(n, start + PIECE)] = block[:min(PIECE, n - start)]


CHILD = """
import resource, sys
import h5py
from eiclip_core.data.fashiongen import inspect
if sys.argv[2] == "kit":
    problems, table = inspect(sys.argv[1], check_all=True)
    assert not problems and len(table["ids"]) == 1, problems
elif sys.argv[2] == "column":
    with h5py.File(sys.argv[1]) as f:
        f["input_description"][()]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def peak_mib(path: Path, how: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), how], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    args = parser.parse_args()
    print(f"{'rows':>12} {'file MB':>8} {'declared MB':>12} {'imports MiB':>12} {'kit peak MiB':>13} "
          f"{'one whole column MiB':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"bomb_{n}.h5"
            write_bomb(path, n)
            with h5py.File(path) as f:
                declared = sum(f[k].size * f[k].dtype.itemsize for k in REQUIRED_KEYS)
            print(f"{n:>12} {path.stat().st_size / 1e6:>8.1f} {declared / 1e6:>12.0f} {peak_mib(path, 'none'):>12} "
                  f"{peak_mib(path, 'kit'):>13} {peak_mib(path, 'column'):>21}", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
