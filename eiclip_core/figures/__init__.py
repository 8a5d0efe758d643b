"""Every figure of the kit, and the one way to save one.

    data          notebooks 01 and 02: distributions, example products, entity priors
    runs          notebooks 03 and 04 (and 05): loss and validation curves, throughput, recall bars,
                  retrieval examples
    harm          notebook 01: the confounder before fine-tuning (zero-shot harm, brand swap)
    confounders   notebook 05: dictionaries before/after the EALM, text-feature maps, gates, attention,
                  the counterfactual probe, the confounding sweep

Plotting functions take arrays or tables and return a matplotlib figure; they compute nothing the
notebook reads (the numbers come from eiclip_core.analysis.measures, eiclip_core.evaluation.results, ...). `save_figure`
writes a figure as <reports_dir>/figures/<name>.png, atomically, with fixed settings.
"""
from pathlib import Path

import matplotlib.pyplot as plt

from eiclip_core import layout
from eiclip_core.io import atomic_path
from eiclip_core.figures.confounders import (attention_figure, dictionary_figure, gate_figure, probe_figure,
                                             sweep_figure, text_umap_figure, umap_2d)
from eiclip_core.figures.data import distributions_figure, example_grid, priors_figure
from eiclip_core.figures.harm import brand_swap_figure, harm_figure
from eiclip_core.figures.runs import (loss_curves_figure, plot_recall, recall_figure, retrieval_examples_figure,
                                      throughput_figure, validation_curves_figure)

DPI = 100


def save_figure(fig, reports_dir, name: str) -> Path:
    """Write `fig` as <reports_dir>/figures/<name>.png, close it, and return that path.

    PNG at DPI dots per inch, tight bounding box, no software tag or timestamp in the metadata (the
    same figure gives the same bytes). Written to a temporary file in the same folder and renamed over
    the destination (eiclip_core.io.atomic_path): a reader never sees half a PNG, and a figure that
    fails to draw leaves the previous file as it was. Closed, so the inline backend does not draw it a
    second time: a notebook shows the saved file (eiclip_core.pipeline.notebook.show), one drawing per figure."""
    path = layout.figures_dir(reports_dir) / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


__all__ = ["save_figure", "attention_figure", "dictionary_figure", "gate_figure", "probe_figure", "sweep_figure",
           "text_umap_figure", "umap_2d", "brand_swap_figure", "harm_figure", "distributions_figure", "example_grid",
           "priors_figure",
           "loss_curves_figure", "plot_recall", "recall_figure", "retrieval_examples_figure", "throughput_figure",
           "validation_curves_figure"]
