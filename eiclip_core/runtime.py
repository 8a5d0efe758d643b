"""Facts about the machine and the code a run records: device, seeds, git revision, versions."""
import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when a GPU is present, else cpu; "cuda" without a GPU or a name torch does not know
    ("tpu") is a clear error."""
    from eiclip_core.errors import KitError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists twenty device types; these are the ones the kit runs on
        raise KitError(f"--device {name!r}: unknown device (use auto, cpu, cuda or cuda:<index>)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KitError(f"device {name!r}: no CUDA GPU is visible on this machine (use --device cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_revision(root: Path = PROJECT_ROOT) -> str:
    """The commit of the kit's checkout, with "+dirty" when it has uncommitted changes; "unknown" outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_versions() -> dict:
    """Versions of Python, the platform and the packages that decide the numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "torchvision", "open_clip_torch", "transformers", "numpy", "pandas", "h5py",
                "spacy", "umap-learn", "papermill", "nbval", "eiclip-kit"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    versions["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions["cpu_threads"] = torch.get_num_threads()
    versions["hf_hub_offline"] = os.environ.get("HF_HUB_OFFLINE")
    return versions
