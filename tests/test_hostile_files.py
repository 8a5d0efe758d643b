"""Hostile and damaged HDF5 files: refused in one line, exit 2, with bounded memory and without hanging.

Each file is built here: a small file declaring 10^9 rows per key (a memory bomb), a gzip-chunked file
with corrupt chunks in the middle, corrupt object headers, a FIFO named .h5, a file the user may not
read. The reader (`FashionGen`, used by mine and train) and `eiclip check-data` must name the file
and the problem, before reading more than the file holds.
"""
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import pytest

from eiclip_core.cli import main
from eiclip_core.data import FashionGen
from eiclip_core.data.check import check_file
from eiclip_core.data.fashiongen import IMAGE_KEY, REQUIRED_KEYS
from eiclip_core.errors import KitError

BILLION = 10**9


def _rewrite(path, layout):
    """Each required key rewritten as `layout(name, values)` would store it; returns path."""
    with h5py.File(path, "a") as f:
        for key in REQUIRED_KEYS:
            values = f[key][()]
            del f[key]
            layout(f, key, values)
    return path


def _declare_billion_rows(f, key, values, chunked=True):
    """10^9 rows declared, only the real ones written: the other chunks (or the whole contiguous
    storage, which HDF5 allocates on first write only) are never in the file."""
    shape = (BILLION,) + values.shape[1:]
    if chunked:
        f.create_dataset(key, shape=shape, dtype=values.dtype, chunks=(64,) + values.shape[1:],
                         compression="gzip")[:len(values)] = values
    else:
        f.create_dataset(key, shape=shape, dtype=values.dtype)


@pytest.fixture(params=["chunked", "contiguous"])
def memory_bomb(request, tmp_path, write_fashiongen_h5):
    chunked = request.param == "chunked"
    path = write_fashiongen_h5(tmp_path / f"bomb_{request.param}.h5")
    return _rewrite(path, lambda f, k, v: _declare_billion_rows(f, k, v, chunked))


def test_memory_bomb_is_refused_before_any_read(memory_bomb, monkeypatch, capsys):
    assert memory_bomb.stat().st_size < 1 << 20  # under 1 MB on disk, 10^9 rows per key declared
    with h5py.File(memory_bomb) as f:
        assert f["input_productID"].shape[0] == BILLION

    def no_read(self, *args):
        raise AssertionError(f"read {self.name} of a file declaring 10^9 rows")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_read)
    lines = check_file(memory_bomb)
    assert len(lines) == len(REQUIRED_KEYS)  # every key is named, none is read
    assert all(f"declares {BILLION} rows" in line for line in lines)
    with pytest.raises(KitError, match=f"bomb_.*key '{IMAGE_KEY}' declares {BILLION} rows"):
        FashionGen(memory_bomb)
    assert main(["check-data", str(memory_bomb)]) == 2
    assert "Traceback" not in capsys.readouterr().out


def _limit_memory():  # private memory (numpy arrays, malloc) of the child capped at 2 GiB
    resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))


@pytest.mark.slow  # two CLI processes under a memory cap
def test_memory_bomb_stays_bounded_under_a_memory_cap(tmp_path, write_fashiongen_h5):
    """check-data and mine on the bomb, in processes that may not allocate more than 2 GiB (one
    column of 10^9 int64 is 8 GB): one line and exit 2, never a MemoryError."""
    bomb = _rewrite(write_fashiongen_h5(tmp_path / "bomb.h5"), _declare_billion_rows)
    commands = {"check-data": ["check-data", str(bomb)],
                "mine": ["mine", "--train", str(bomb), "--out", str(tmp_path / "entities.json")]}
    for name, args in commands.items():
        done = subprocess.run([sys.executable, "-m", "eiclip_core.cli", *args], capture_output=True, text=True,
                              preexec_fn=_limit_memory, timeout=600)
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr + done.stdout and "MemoryError" not in done.stderr
        assert "declares 1000000000 rows" in done.stdout + done.stderr
    assert not (tmp_path / "entities.json").exists()


# ---------------------------------------------------------------------------------------------
# corrupt chunks: the default check reads the first and last image rows, --full reads every chunk

def _gzip_chunks(f, key, values):
    f.create_dataset(key, data=values, chunks=(1,) + values.shape[1:], compression="gzip")


def _corrupt_chunks(path, key, chunks):
    """Overwrite the stored bytes of the one-row chunks at rows `chunks` of `key` with junk; returns path."""
    with h5py.File(path) as f:
        infos = [f[key].id.get_chunk_info_by_coord((row,) + (0,) * (f[key].ndim - 1)) for row in chunks]
        where = [(info.byte_offset, info.size) for info in infos]
    with open(path, "r+b") as fh:
        for offset, size in where:
            fh.seek(offset)
            fh.write(b"\xa5" * size)
    return path


def test_full_scan_finds_corrupt_middle_chunks(tmp_path, write_fashiongen_h5, capsys):
    path = _rewrite(write_fashiongen_h5(tmp_path / "damaged.h5", views=(5,) * 6), _gzip_chunks)
    _corrupt_chunks(path, IMAGE_KEY, range(10, 20))  # the middle third of 30 one-row chunks

    # the default check reads only the first and last image rows, and its OK line says so
    assert check_file(path) == []
    assert main(["check-data", str(path)]) == 0
    assert "28 of 30 image rows not read; --full reads them" in capsys.readouterr().out

    lines = check_file(path, full=True)
    assert len(lines) == 1 and lines[0].startswith(f"{path}: key '{IMAGE_KEY}': 10 chunk(s) unreadable")
    assert "first at row 10 " in lines[0]
    assert main(["check-data", "--full", str(path)]) == 2
    out = capsys.readouterr().out
    assert "10 chunk(s) unreadable" in out and "OK " not in out

    ds = FashionGen(path)  # what --full protects from: training fails at the first damaged row
    assert ds.image(9).shape == (8, 8, 3)
    with pytest.raises(KitError, match=r"damaged\.h5: key 'input_image': row 15 unreadable"):
        ds.image(15)
    ds.close()


def test_full_scan_passes_and_every_row_loads(tmp_path, write_fashiongen_h5, capsys):
    path = _rewrite(write_fashiongen_h5(tmp_path / "gzip.h5", views=(5,) * 6), _gzip_chunks)
    assert check_file(path, full=True) == []
    assert main(["check-data", "--full", str(path)]) == 0
    assert "(every chunk read)" in capsys.readouterr().out
    ds = FashionGen(path)
    assert all(ds.image(row).shape == (8, 8, 3) for row in range(ds.n_rows))
    ds.close()


# ---------------------------------------------------------------------------------------------
# corrupt metadata, files that are not readable regular files

@pytest.mark.parametrize("key", [IMAGE_KEY, "input_name"])
@pytest.mark.parametrize("offset", [0, 8, 20])  # version byte, header chunk size, first message
def test_corrupt_object_header_is_one_line_exit_2(key, offset, tmp_path, write_fashiongen_h5, capsys):
    path = write_fashiongen_h5(tmp_path / "corrupt.h5")
    with h5py.File(path) as f:
        header = h5py.h5o.get_info(f[key].id).addr
    with open(path, "r+b") as fh:
        fh.seek(header + offset)
        fh.write(b"\xff" * 24)

    assert main(["check-data", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"corrupt.h5: key '{key}': corrupt HDF5 metadata" in out and "Traceback" not in out
    assert main(["mine", "--train", str(path), "--out", str(tmp_path / "entities.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: key '{key}': corrupt HDF5 metadata")
    assert not (tmp_path / "entities.json").exists()


def test_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the check must not open it.

    Run in a process of its own, which a timeout can kill: a thread blocked inside HDF5 would hold
    h5py's global lock and hang every later test.
    """
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "-m", "eiclip_core.cli", "check-data", str(fifo)],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("check-data blocked opening a FIFO")
    assert done.returncode == 2
    assert done.stdout.splitlines()[0] == f"{fifo}: is a FIFO, expected a Fashion-Gen .h5 file"
    assert check_file(fifo) == [f"{fifo}: is a FIFO, expected a Fashion-Gen .h5 file"]
    with pytest.raises(KitError, match="pipe.h5: is a FIFO"):
        FashionGen(fifo)


def test_unreadable_file_says_permission_denied(tmp_path, write_fashiongen_h5, capsys):
    """chmod 000 stops everyone but root; as root, the check runs with the effective uid of nobody.

    The folder is made in /tmp with mode 755 because pytest's tmp_path is private to its owner.
    """
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "locked.h5"
        write_fashiongen_h5(path).chmod(0)
        as_root = os.geteuid() == 0
        if as_root:
            os.seteuid(65534)  # nobody; the real uid stays root, so the effective one comes back below
        try:
            lines, code = check_file(path), main(["check-data", str(path)])
            with pytest.raises(KitError) as err:
                FashionGen(path)
        finally:
            if as_root:
                os.seteuid(0)
    assert lines == [f"{path}: permission denied (cannot read the file)"]
    assert str(err.value) == lines[0] and code == 2
    assert "truncated" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# links: a key must be a dataset of this file, never a soft or external link to another object

@pytest.mark.parametrize("kind", ["external", "soft"])
def test_hdf5_links_are_refused_like_external_storage(kind, tmp_path, write_fashiongen_h5, capsys):
    """An external link makes the reader return another file's text; a soft link another key's. Both are
    refused by name, as external storage and virtual datasets are, by check-data and the reader."""
    other = write_fashiongen_h5(tmp_path / "other.h5", texts=[(b"Other name", b"Text of another file")] * 6)
    path = write_fashiongen_h5(tmp_path / "linked.h5")
    with h5py.File(path, "a") as f:
        del f["input_description"]
        f["input_description"] = (h5py.ExternalLink(str(other), "/input_description") if kind == "external"
                                  else h5py.SoftLink("/input_name"))
    target = f"an external link (to {other}:/input_description)" if kind == "external" else "a soft link (to /input_name)"
    line = f"{path}: key 'input_description' is {target}, not a dataset of this file; the kit does not follow links"
    assert check_file(path) == [line]
    assert main(["check-data", str(path)]) == 2
    assert capsys.readouterr().out.splitlines()[0] == line
    with pytest.raises(KitError) as err:
        FashionGen(path)
    assert str(err.value) == line
