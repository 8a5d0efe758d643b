"""Shared fixtures. Keep each one small and say what it provides."""
import pytest
from hypothesis import settings


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """Generated smoke data set (seed 0, profile defaults): {"train", "validation", "ground_truth"} -> Path.

    Generated once per test session (about a second); tests must not modify the files.
    """
    from eiclip_core.pipeline.synth_command import generate_profile_data

    return generate_profile_data(tmp_path_factory.mktemp("smoke"), "smoke", seed=0)


def _write_fashiongen_h5(path, views=(1, 2, 3, 4, 5, 6), size=8, width=None, drop=(), replace=None,
                         ids=None, texts=None, extra=True):
    """Hand-build a small file in the real Fashion-Gen layout, with the real files' quirks.

    Quirks: latin-1 accents ("appliqué" stored as b"appliqu\\xe9"), space-padded fixed-width strings,
    extra keys (a dataset and a group), 1-D index_2, products with the given numbers of views.
    `drop` removes keys, `replace` maps key -> array written instead, `ids` sets the per-row product
    ids, `texts` sets the per-product (name, description) as bytes.
    """
    import h5py
    import numpy as np

    n = int(sum(views))
    pid = np.repeat(np.arange(1000, 1000 + len(views)), views) if ids is None else np.asarray(ids)
    texts = texts or [(f"Red Slim-Fit Shirt {p}  ".encode(), b"  Cotton shirt with appliqu\xe9 logo.   ")
                      for p in range(len(views))]
    per_row = lambda vals: [vals[i] for i, k in enumerate(views) for _ in range(k)]
    col = lambda vals: np.array(vals, dtype=f"S{width or max(len(v) for v in vals) + 6}").reshape(-1, 1)
    data = {
        "input_image": np.arange(n * size * size * 3, dtype=np.int64).reshape(n, size, size, 3).astype(np.uint8),
        "input_productID": pid.reshape(-1, 1).astype(np.int64),
        "input_name": col(per_row([t[0] for t in texts])),
        "input_description": col(per_row([t[1] for t in texts])),
        "input_concat_description": col(per_row([t[0] + b" " + t[1] for t in texts])),
        "input_brand": col([b"Maison Kitsun\xe9 "] * n),
        "input_category": col([b"TOPS"] * n),
        "input_subcategory": col([b"SHIRTS"] * n),
        "input_composition": col([b"Shell: 60% wool, 40% polyamide. Lining: 100% viscose."] * n),
        "input_season": col([b"SS2016"] * n),
        "input_gender": col([b"MEN"] * n),
        "input_department": col([b"CLOTHING"] * n),
        "input_pose": col([f"id_gridfs_{j + 1}".encode() for k in views for j in range(k)]),
        "input_msrpUSD": np.full((n, 1), 125.0, np.float32),
        "index": np.arange(n).reshape(-1, 1),
        "index_2": np.arange(n),
    }
    data.update(replace or {})
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k not in drop:
                f.create_dataset(k, data=v)
        if extra:
            f.create_dataset("input_unknown_extra", data=np.zeros((n, 2)))
            f.create_group("some_group").create_dataset("x", data=[1, 2, 3])
    return path


@pytest.fixture(scope="session")
def write_fashiongen_h5():
    """Function writing a small hand-built Fashion-Gen file (see _write_fashiongen_h5 for the options)."""
    return _write_fashiongen_h5


def _assert_whole_png(path):
    """`path` is a complete PNG: signature, IEND chunk last, chunk checksums, and pixels that decode."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[-8:-4] == b"IEND"
    with Image.open(path) as im:
        im.verify()  # chunk checksums
    with Image.open(path) as im:
        im.load()  # decodes every pixel: a truncated file raises here


@pytest.fixture(scope="session")
def assert_whole_png():
    """Function asserting that a path holds a whole PNG (see _assert_whole_png)."""
    return _assert_whole_png


# Property-based tests draw the same examples on every run, so CI is repeatable; run with
# `--hypothesis-profile=explore` to search afresh.
settings.register_profile("kit", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile("kit")


@pytest.fixture
def read_only(monkeypatch):
    """Function marking a folder read-only: creating a file or folder under it then fails with EROFS, as on
    a read-only mount. A monkeypatch of os.open and os.mkdir (what tempfile and pathlib create with),
    because tests run as root, where chmod does not stop writes."""
    import errno
    import os
    from pathlib import Path

    folders, real_open, real_mkdir = [], os.open, os.mkdir

    def refused(path):
        path = Path(path).absolute()
        return not path.exists() and any(path.is_relative_to(f) for f in folders)

    def guarded_open(path, flags, mode=0o777, *, dir_fd=None):
        unnamed = getattr(os, "O_TMPFILE", 0)  # tempfile.TemporaryFile: an unnamed file in the folder `path`
        if (flags & os.O_CREAT and refused(path)) or (unnamed and flags & unnamed == unnamed
                                                      and Path(path).absolute() in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def guarded_mkdir(path, mode=0o777, *, dir_fd=None):
        if refused(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    return lambda folder: folders.append(Path(folder).absolute())


def pytest_configure(config):
    config.addinivalue_line("markers", "notebooks: reads a fresh smoke run's records (make test-notebooks runs it "
                                       "after nbval; `make test-unit` and `make test-fast` leave it out)")
