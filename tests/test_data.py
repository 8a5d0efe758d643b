"""The Fashion-Gen reader and the torch datasets, on generated files and on hand-built files with real quirks."""
import os
import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eiclip_core.data import EvalDataset, FashionGen, TrainDataset
from eiclip_core.errors import KitError
from eiclip_core.data.product_text import product_text

COLUMNS = ["product_id", "name", "description", "brand", "category", "subcategory", "composition",
           "season", "gender", "department", "price", "rows", "text"]


# ---------------------------------------------------------------------------------------------
# reader

def test_reader_on_generated_files(smoke_data):
    train, val = FashionGen(smoke_data["train"]), FashionGen(smoke_data["validation"])
    assert len(train) == 256 and len(val) == 128  # smoke profile sizes
    assert train.products.columns.tolist() == COLUMNS
    p = train.products
    assert p.product_id.is_unique and not set(p.product_id) & set(val.products.product_id)
    assert [r[0] for r in p.rows] == train.first_row.tolist()
    flat = [r for rows in p.rows for r in rows]
    assert flat == list(range(train.n_rows))  # contiguous, in file order, every row once
    assert all(1 <= len(r) <= 6 for r in p.rows)
    assert (p.text == [product_text(a, b) for a, b in zip(p.name, p.description)]).all()
    img = train.image(flat[-1])
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert (p.department.isin(["CLOTHING", "SHOES", "BAGS"])).all()


def test_reader_handles_real_quirks(tmp_path, write_fashiongen_h5):
    path = write_fashiongen_h5(tmp_path / "quirks.h5", views=(1, 2, 3, 4, 5, 6))
    ds = FashionGen(path)
    p = ds.products
    assert len(ds) == 6 and ds.n_rows == 21
    assert [len(r) for r in p.rows] == [1, 2, 3, 4, 5, 6]
    assert list(p.rows[2]) == [3, 4, 5]
    # latin-1, stripped: the accent survives, the padding does not
    assert p.description[0] == "Cotton shirt with appliqué logo."
    assert p.brand[0] == "Maison Kitsuné"
    assert p.name[3] == "Red Slim-Fit Shirt 3"
    assert p.text[0] == "Red Slim-Fit Shirt 0. Cotton shirt with appliqué logo."
    assert p.composition[0] == "Shell: 60% wool, 40% polyamide. Lining: 100% viscose."
    assert p.product_id.tolist() == list(range(1000, 1006))
    expected = np.arange(21 * 8 * 8 * 3, dtype=np.int64).reshape(21, 8, 8, 3).astype(np.uint8)
    assert np.array_equal(ds.image(20), expected[20])


def test_reader_reads_any_string_width(tmp_path, write_fashiongen_h5):
    wide = FashionGen(write_fashiongen_h5(tmp_path / "wide.h5", views=(2, 1), width=300))
    narrow = FashionGen(write_fashiongen_h5(tmp_path / "narrow.h5", views=(2, 1)))
    assert wide.products.drop(columns="rows").equals(narrow.products.drop(columns="rows"))


def test_reader_accepts_one_d_columns(tmp_path, write_fashiongen_h5):
    """index_2 is 1-D in the real files; accept the same for any per-row key."""
    names = np.array([b"A", b"A", b"B"])
    ds = FashionGen(write_fashiongen_h5(tmp_path / "flat.h5", views=(2, 1), replace={"input_name": names}))
    assert ds.products.name.tolist() == ["A", "B"]


def test_handle_is_opened_lazily_per_process(tmp_path, write_fashiongen_h5):
    ds = FashionGen(write_fashiongen_h5(tmp_path / "lazy.h5", views=(2, 2)))
    assert ds._file is None  # nothing open after reading the metadata (safe to fork)
    ds.image(0)
    first = ds._file
    ds.image(1)
    assert ds._file is first  # one handle per process, reused
    ds._pid = os.getpid() + 1  # as seen from a forked worker
    ds.image(2)
    assert ds._file is not first and ds._pid == os.getpid()
    ds.close()
    assert ds._file is None


def test_image_row_out_of_range(tmp_path, write_fashiongen_h5):
    ds = FashionGen(write_fashiongen_h5(tmp_path / "r.h5", views=(1,)))
    with pytest.raises(IndexError):
        ds.image(1)


# ---------------------------------------------------------------------------------------------
# datasets

def _rows_seen(ds):
    return [ds.view_row(i) for i in range(len(ds))]


def test_train_dataset_views_depend_only_on_seed_epoch_product(smoke_data):
    a = TrainDataset(smoke_data["train"], seed=3)
    b = TrainDataset(smoke_data["train"], seed=3)
    a.set_epoch(2)
    b.set_epoch(0)
    b.set_epoch(2)  # a resumed run reaches epoch 2 by another path
    assert _rows_seen(a) == _rows_seen(b)
    a.set_epoch(3)
    assert _rows_seen(a) != _rows_seen(b)
    c = TrainDataset(smoke_data["train"], seed=4)
    c.set_epoch(2)
    assert _rows_seen(c) != _rows_seen(b)
    for i, row in enumerate(_rows_seen(b)):
        assert row in b.data.products.rows[i]
    x, i = b[5]
    assert i == 5 and x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(b.data.image(b.view_row(5))).permute(2, 0, 1) / 255.0)


def test_train_dataset_with_workers_matches_single_process(smoke_data):
    ds = TrainDataset(smoke_data["train"], seed=0)
    ds.set_epoch(1)
    one = [b for b in DataLoader(ds, batch_size=32, num_workers=0)]
    two = [b for b in DataLoader(ds, batch_size=32, num_workers=2)]
    for (x1, i1), (x2, i2) in zip(one, two, strict=True):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)


def test_eval_dataset_first_and_all_views(smoke_data):
    first = EvalDataset(smoke_data["validation"], views="first")
    every = EvalDataset(smoke_data["validation"], views="all", transform=lambda im: np.asarray(im))
    n = len(first.data)
    assert len(first) == n and first.product_index.tolist() == list(range(n))
    assert len(every) == first.data.n_rows
    assert np.bincount(every.product_index).tolist() == first.data.n_views.tolist()
    k = len(every) - 1
    img, p = every[k]
    assert p == n - 1 and np.array_equal(img, first.data.image(k))
    loader = DataLoader(first, batch_size=50, num_workers=2)
    assert torch.cat([i for _, i in loader]).tolist() == list(range(n))
    with pytest.raises(ValueError, match="views"):
        EvalDataset(smoke_data["validation"], views="some")


def test_datasets_raise_kiterror_on_bad_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(KitError, match="bad.h5"):
        TrainDataset(bad, seed=0)
    with pytest.raises(KitError, match="bad.h5"):
        EvalDataset(bad)


def open_files() -> int:
    """Open descriptors of this process, once the queue feeder threads of finished loaders are gone:
    they close their pipe ends asynchronously, after the loader has shut its workers down."""
    for thread in threading.enumerate():
        if thread.name == "QueueFeederThread":
            thread.join(timeout=10)
    return len(os.listdir("/proc/self/fd"))


def test_loader_does_not_leak_file_handles_across_epochs(smoke_data):
    """Each epoch's workers open the HDF5 file lazily and close it when they exit: the parent's
    open files stay flat however many epochs run."""
    ds = TrainDataset(smoke_data["train"], seed=0)
    counts = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        for _ in DataLoader(ds, batch_size=64, num_workers=2):
            pass
        counts.append(open_files())
    assert counts[1] == counts[2] == counts[3], counts
