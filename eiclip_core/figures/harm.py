"""Figures of the confounder measured before fine-tuning (notebook 01, eiclip_core.analysis.harm)."""
import matplotlib.pyplot as plt
import pandas as pd


def harm_figure(harm: pd.DataFrame):
    """Zero-shot mean recall at each knob, one line per data seed: the harm, seed by seed."""
    wide = harm.pivot(index="data_seed", columns="knob", values="mean")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    labels = [f"knob {k:g}" for k in wide.columns]
    for seed, row in wide.iterrows():
        ax.plot(labels, row.values, marker="o", label=f"data seed {seed}")
    ax.set_ylabel("zero-shot mean recall (full protocol)")
    ax.set_ylim(bottom=0)
    ax.set_title("general backbone on products: knob 0 (control) vs knob 1", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def brand_swap_figure(pull: pd.DataFrame):
    """Per colour word, the pull of a brand swap toward the word's product colour (points of top-10 share)."""
    ordered = pull.sort_values("pull")
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(ordered) + 1.2))
    colours = ["#c44e52" if p > 0 else "#8c8c8c" for p in ordered["pull"]]
    ax.barh([f"{w} -> {c}" for w, c in zip(ordered["word"], ordered["product_colour"])], ordered["pull"],
            color=colours)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("top-10 share of that colour: brand swapped to the word minus to a made-up word (points)")
    ax.set_title("brand 'Olive' on a product: does retrieval drift toward the colour?", fontsize=10)
    return fig
