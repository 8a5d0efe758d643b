"""Figures of notebooks 03 (training: losses, validation recall, throughput) and 04 (evaluation); the
retrieval examples also serve notebook 05."""
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from eiclip_core.figures.text import literal

LOSS_COLUMNS = (("loss", "total loss"), ("loss_itc", "L_itc"), ("loss_ent", "L_ent (EALM rows)"))


def loss_curves_figure(logs: pd.DataFrame):
    """One panel per loss (total, L_itc, L_ent), one line per run; `logs` are the runs' log.csv rows
    with `row` and `seed` columns added."""
    fig, axes = plt.subplots(1, len(LOSS_COLUMNS), figsize=(13, 3.5))
    for (row, s), g in logs.groupby(["row", "seed"]):
        for ax, (col, _) in zip(axes, LOSS_COLUMNS):
            ax.plot(g["step"], g[col], label=f"{row} seed{s}")
    for ax, (_, title) in zip(axes, LOSS_COLUMNS):
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def validation_curves_figure(logs: pd.DataFrame):
    """Validation mean recall (full protocol, percent; log.csv's val_mean) against the optimiser step, one
    line per run with a marker at each evaluation (logs as above). Runs trained with eval_every = 0 have
    no points; when no run has any, the panel says so."""
    fig, ax = plt.subplots(figsize=(7, 3))
    scored = (logs if "val_mean" in logs else logs.assign(val_mean=float("nan"))).dropna(subset=["val_mean"])
    for (row, s), g in scored.groupby(["row", "seed"]):
        ax.plot(g["step"], g["val_mean"], marker="o", label=f"{row} seed{s}")
    if scored.empty:
        ax.text(0.5, 0.5, "no validation recall in these logs (trained with eval_every = 0)", ha="center",
                transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("validation mean recall (%)")
    fig.tight_layout()
    return fig


def throughput_figure(logs: pd.DataFrame):
    """Training samples per second against the optimiser step, one line per run (logs as above)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for (row, s), g in logs.groupby(["row", "seed"]):
        ax.plot(g["step"], g["samples_per_s"], label=f"{row} seed{s}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("samples / s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_recall(summary: pd.DataFrame, key: str = "t2i_r1", ax=None):
    """Bar plot of one metric per row and protocol, with its spread (`<key>_lo/_hi`) as error bars.

    summary: eiclip_core.evaluation.results.summary_table; the published rows are left out."""
    ours = summary[~summary["row"].str.endswith("(published)")]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    rows = list(dict.fromkeys(ours["row"]))
    protocols = list(dict.fromkeys(ours["protocol"]))
    width = 0.8 / max(len(protocols), 1)
    for i, protocol in enumerate(protocols):
        part = ours[ours["protocol"] == protocol].set_index("row").reindex(rows)
        err = np.stack([part[key] - part[f"{key}_lo"].clip(lower=0), part[f"{key}_hi"] - part[key]])
        ax.bar(np.arange(len(rows)) + i * width, part[key], width, yerr=np.nan_to_num(err), capsize=3,
               label=protocol)
    ax.set_xticks(np.arange(len(rows)) + width * (len(protocols) - 1) / 2, rows)
    ax.set_ylabel(f"{key} (%)")
    ax.set_title(key)
    ax.legend(fontsize=8)
    return ax


def recall_figure(summary: pd.DataFrame, keys=("i2t_r1", "t2i_r1")):
    """One `plot_recall` panel per metric key, side by side."""
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        plot_recall(summary, key, ax=ax)
    fig.tight_layout()
    return fig


def _frame(ax, hit: bool) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("limegreen" if hit else "lightgrey")
        spine.set_linewidth(4 if hit else 1)


def retrieval_examples_figure(cases: list, image_of_product, title: str = ""):
    """One row per text query: its text, its top-k images (the positive framed in green), the positive.

    cases: dicts with query (the query's product index: its positive), text, top (product indices,
    best first), rank (0-based rank of the positive), and an optional label shown above the text
    (e.g. the model); eiclip_core.evaluation.scoring.retrieval_examples makes them. image_of_product(index)
    -> uint8 (H, W, 3)."""
    k = max(len(c["top"]) for c in cases)
    fig, axes = plt.subplots(len(cases), k + 2, figsize=(2 * (k + 2), 2.1 * len(cases)), squeeze=False)
    for line, case in zip(axes, cases):
        label = f"{case['label']}\n\n" if case.get("label") else ""
        line[0].text(0, 0.5, literal(label + textwrap.fill(case["text"][:160], 28)), fontsize=7, va="center")
        line[0].axis("off")
        for rank, (ax, p) in enumerate(zip(line[1:], case["top"]), 1):
            ax.imshow(image_of_product(p))
            _frame(ax, p == case["query"])
            ax.set_title(f"#{rank}" + (" (positive)" if p == case["query"] else ""), fontsize=8)
        line[-1].imshow(image_of_product(case["query"]))
        _frame(line[-1], False)
        line[-1].set_title(f"positive: rank {case['rank'] + 1}", fontsize=8, color="green")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
