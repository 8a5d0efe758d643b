"""What every notebook does first: work from the project root, seed, and set display defaults.

Notebooks are run from three places (JupyterLab in notebooks/, papermill from the root, nbval from
the folder of the executed copy), so paths in their parameters are always relative to the project
root and `setup` moves there.
"""
import os

import matplotlib
import pandas as pd

from eiclip_core.runtime import PROJECT_ROOT, resolve_device, seed_everything


def setup(seed: int = 0, device: str = "auto"):
    """chdir to the project root, seed everything, set plot and table defaults; return the torch device."""
    os.chdir(PROJECT_ROOT)
    seed_everything(seed)
    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 100, "figure.figsize": (8, 4),
                                "axes.titlesize": 11, "svg.hashsalt": "eiclip"})
    pd.set_option("display.precision", 2)
    pd.set_option("display.width", 120)
    return resolve_device(device)


def show(path) -> None:
    """Display a figure from the PNG save_figure wrote (nothing when there is no figure, path None)."""
    from IPython.display import Image, display

    if path is not None:
        display(Image(filename=str(path)))
