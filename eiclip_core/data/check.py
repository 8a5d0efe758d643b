"""`eiclip check-data [--full] PATH...`: validate Fashion-Gen HDF5 files before training depends on them.

One line per problem, naming the file and the key; an OK line per good file; exit status 2 if any
file has a problem (bad input, as everywhere in the kit). The checks are the reader's own
(`fashiongen.inspect`), run to the end instead of stopping at the first problem, and extended to
the columns the reader does not use (the long concatenated description, the pose, the row indices):
a file `FashionGen(path)` refuses always fails here.

By default every metadata column is read in full but only the first and last image rows are (the
images are most of a file), and the OK line says so. `--full` reads every chunk of every
dataset the kit reads, images included, with a progress bar: a file that passes `--full` always
loads, and every image row of it reads.
"""
from eiclip_core.data.fashiongen import inspect
from eiclip_core.errors import KitError


def _check(path, full=False, progress=False):
    try:
        problems, table = inspect(path, check_all=True, full=full, progress=progress)
    except KitError as e:  # unreadable file: a single problem, already naming the file
        return [str(e)], None
    return [f"{path}: {p}" for p in problems], table


def check_file(path, full=False) -> list[str]:
    """All problems of one file as lines `"<path>: <problem>"`; [] when the file is valid.

    full=True also reads every image row (every chunk of the file), which takes as long as reading it.
    """
    return _check(path, full)[0]


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Fashion-Gen .h5 files (real or generated)")
    parser.add_argument("--full", action="store_true",
                        help="read every chunk, every image included (default: metadata, first and last image)")


def _ok_line(path, t, full) -> str:
    h, w, _ = t["image_shape"]
    n = t["n_rows"]
    read = ("every chunk read" if full or n <= 2 else
            f"metadata read in full, {n - 2} of {n} image rows not read; --full reads them")
    return f"OK {path}: {len(t['ids'])} products, {n} images of {h}x{w} ({read})"


def run(args) -> int:
    bad = 0
    for path in args.paths:
        problems, t = _check(path, args.full, progress=True)
        for line in problems:
            print(line)
        if problems:
            bad += 1
        else:
            print(_ok_line(path, t, args.full))
    if bad:
        print(f"{bad} of {len(args.paths)} file(s) have problems")
    return 2 if bad else 0
