"""Fashion-Gen data: the HDF5 reader, torch datasets on top, and the file checker (`eiclip check-data`)."""
from eiclip_core.data.datasets import EvalDataset, TrainDataset
from eiclip_core.data.fashiongen import FashionGen

__all__ = ["FashionGen", "TrainDataset", "EvalDataset"]
