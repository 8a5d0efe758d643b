"""Where things live on disk, in one place: data splits, the entity artifact, runs, caches, reports.

    data/<profile>/train.h5, validation.h5, ground_truth.json   generated data (eiclip synth)
    data/fashiongen/fashiongen_256_256_{train,validation}.h5    the real files (never downloaded)
    data/<profile>/entities.json                                entity artifact (notebook 02)
    data/<profile>/runs/<row>/seed<k>/                          training runs (notebook 03)
    data/<profile>/cache/                                       embedding caches (notebook 04)
    reports/<profile>/                                          executed notebooks, results, figures
"""
from pathlib import Path

from eiclip_core.errors import KitError

SPLITS = ("train", "validation")
REAL_FILE = "fashiongen_256_256_{split}.h5"


def split_file(data_dir, split: str) -> Path:
    """The HDF5 file of a split: `<split>.h5` (generated) or the real Fashion-Gen file name."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / f"{split}.h5", data_dir / REAL_FILE.format(split=split)):
        if candidate.exists():
            return candidate
    raise KitError(f"{data_dir}: no {split} file (expected {split}.h5 or {REAL_FILE.format(split=split)})")


def entities_file(data_dir) -> Path:
    return Path(data_dir) / "entities.json"


def ground_truth_file(data_dir) -> Path:
    return Path(data_dir) / "ground_truth.json"


def run_dir(data_dir, row: str, seed: int) -> Path:
    return Path(data_dir) / "runs" / row / f"seed{seed}"


def cache_dir(data_dir) -> Path:
    return Path(data_dir) / "cache"


def figures_dir(reports_dir) -> Path:
    path = Path(reports_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path
