"""Fashion-Gen data: the HDF5 reader, torch datasets on top, and the file checker (`eiclip check-data`)."""
from eiclip_core.data.fashiongen import FashionGen

__all__ = ["FashionGen", "TrainDataset", "EvalDataset"]


def __getattr__(name):
    # the torch datasets are imported on first use: `check-data` and `import-catalog` need no torch
    if name in ("TrainDataset", "EvalDataset"):
        from eiclip_core.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'eiclip_core.data' has no attribute {name!r}")
