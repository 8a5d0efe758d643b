"""Torch datasets over a Fashion-Gen file: one random view per product (training), fixed views (evaluation).

Both read single HDF5 rows through `FashionGen.image`, whose handle is opened lazily in each
DataLoader worker. The transform is the backbone's open_clip preprocess (it takes a PIL image).
"""
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from eiclip_core.data.fashiongen import FashionGen


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """Fallback transform: float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _as_fashiongen(source) -> FashionGen:
    return source if isinstance(source, FashionGen) else FashionGen(source)


class TrainDataset(Dataset):
    """Item i -> (image_tensor, i): one view of product i, drawn from default_rng([seed, epoch, i]).

    The draw depends only on (seed, epoch, product), never on worker count, batch order or what ran
    before, so a run resumed at epoch e sees exactly the images an uninterrupted run saw (METHOD.md
    section 7: one sample per product per epoch, image drawn at random from its views).
    Call `set_epoch(e)` before creating the epoch's DataLoader iterator (workers copy the dataset
    when the iterator starts; with persistent_workers=True they would keep the old epoch).
    """

    def __init__(self, path, transform=None, seed: int = 0):
        self.data = _as_fashiongen(path)
        self.transform = transform or _to_tensor
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def view_row(self, i: int) -> int:
        """The HDF5 row product i shows in the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return int(self.data.first_row[i] + rng.integers(self.data.n_views[i]))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        img = Image.fromarray(self.data.image(self.view_row(i)))
        return self.transform(img), int(i)


class EvalDataset(Dataset):
    """Item k -> (image_tensor, product_index): the first view of each product, or all views.

    `product_index` (len(dataset),) maps items to products (row order of `data.products`), which is
    what the full-all-views protocol needs to count a hit on any view of the product.
    """

    def __init__(self, path, transform=None, views: str = "first"):
        if views not in ("first", "all"):
            raise ValueError(f"views must be 'first' or 'all', not {views!r}")
        self.data = _as_fashiongen(path)
        self.transform = transform or _to_tensor
        self.views = views
        if views == "first":
            self.rows = self.data.first_row.copy()
            self.product_index = np.arange(len(self.data), dtype=np.int64)
        else:
            self.product_index = np.repeat(np.arange(len(self.data), dtype=np.int64), self.data.n_views)
            self.rows = np.arange(self.data.n_rows, dtype=np.int64)  # rows of a product are contiguous

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, k):
        img = Image.fromarray(self.data.image(self.rows[k]))
        return self.transform(img), int(self.product_index[k])
