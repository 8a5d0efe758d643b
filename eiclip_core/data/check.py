"""`eiclip check-data PATH...`: validate Fashion-Gen HDF5 files before hours of training depend on them.

One line per problem, naming the file and the key; an OK line per good file; exit status 1 if any
file has a problem. The checks are the reader's own (`fashiongen.inspect`), run to the end instead of
stopping at the first problem, and extended to the columns the reader does not use (the long
concatenated description, the pose, the row indices): a file `FashionGen(path)` refuses always fails
here, and a file that passes here always loads.
"""
from eiclip_core.data.fashiongen import inspect
from eiclip_core.errors import KitError


def _check(path):
    try:
        problems, table = inspect(path, check_all=True)
    except KitError as e:  # unreadable file: a single problem, already naming the file
        return [str(e)], None
    return [f"{path}: {p}" for p in problems], table


def check_file(path) -> list[str]:
    """All problems of one file as lines `"<path>: <problem>"`; [] when the file is valid."""
    return _check(path)[0]


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Fashion-Gen .h5 files (real or generated)")


def run(args) -> int:
    bad = 0
    for path in args.paths:
        problems, t = _check(path)
        for line in problems:
            print(line)
        if problems:
            bad += 1
        else:
            h, w, _ = t["image_shape"]
            print(f"OK {path}: {len(t['ids'])} products, {t['n_rows']} images of {h}x{w}")
    if bad:
        print(f"{bad} of {len(args.paths)} file(s) have problems")
    return 1 if bad else 0
