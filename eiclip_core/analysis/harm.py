"""The confounder, measured before any fine-tuning (METHOD.md section 11).

Two measures of the general-domain backbone on generated products:

- **Confounding harm**: zero-shot retrieval (full protocol, mean of the six recalls) on data drawn
  at knob 0 and at knob 1 with the same data seed, so only the entity values differ. Repeated over
  data seeds, the harm is the paired difference knob 0 minus knob 1, with its spread.
- **Counterfactual brand swap**: a product's brand is replaced in its text by an everyday colour
  word ("Olive") or by a made-up word; if the backbone reads the brand with its everyday meaning,
  text->image top-10 moves toward products of the nearest product colour (green, for olive). The
  pull is the share of such products after the colour-word swap minus after the made-up swap.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eiclip_core import layout

CONTROL_BRAND = "Velrano"  # a made-up word (not in the text tower's vocabulary as a whole word)


def not_measured(profile, data_dir) -> dict:
    """{"harm": why, "brand_swap": why}, each None when that measure can be taken on this profile and data.

    Both need generated products: the harm a knob to draw the same products at 0 and 1 (the profile's
    harm_data_seeds), the brand swap the generator's brand mentions (ground_truth.json). Real or imported
    data has neither, so notebook 01 prints the reason instead of failing on it."""
    harm = None if profile.harm_data_seeds else (
        f"confounding harm not measured: profile {profile.name} has no generator knob (real or imported data)")
    if harm is not None:
        swap = "brand swap not measured: it needs generated products (their brand mentions) and a knob"
    elif not layout.ground_truth_file(data_dir).is_file():
        swap = (f"brand swap not measured: {layout.ground_truth_file(data_dir)} is missing "
                "(the generator's brand mentions)")
    else:
        swap = None
    return {"harm": harm, "brand_swap": swap}


def backbone_model(backbone):
    """The backbone as an EICLIP with no module switched on: exactly the backbone's features."""
    from eiclip_core.model.config import get_row
    from eiclip_core.model.eiclip import EICLIP

    return EICLIP(backbone.model, {}, {}, get_row("clip-ft")).eval()


def zero_shot_recalls(backbone, data_path, device="cpu") -> dict:
    """The six full-protocol recalls (first view of each product) and their mean, zero-shot."""
    from eiclip_core.data import FashionGen
    from eiclip_core.evaluation.embeddings import extract_embeddings
    from eiclip_core.evaluation.scoring import full_protocol

    emb = extract_embeddings(backbone_model(backbone), backbone, data_path, device, views="first")
    return full_protocol(emb, FashionGen(data_path).products["product_id"].to_numpy())["metrics"]


def harm_table(backbone, profile, data_seeds, work_dir, knobs=(0.0, 1.0), device="cpu") -> pd.DataFrame:
    """Zero-shot mean recall per (data seed, knob); data generated under work_dir (reused when present)."""
    from eiclip_core.synth import generate_unless_present

    rows = []
    for seed in data_seeds:
        for knob in knobs:
            out = Path(work_dir) / f"seed{seed}-knob{knob:g}"
            generate_unless_present(out, profile.name, seed, knob, profile.image_size, profile.n_train_products,
                                    profile.n_val_products, validation_only=True)
            rows.append({"data_seed": seed, "knob": knob,
                         **zero_shot_recalls(backbone, layout.split_file(out, "validation"), device)})
    return pd.DataFrame(rows)


def harm_summary(table: pd.DataFrame, low: float = 0.0, high: float = 1.0) -> dict:
    """Mean recall per knob (mean, std over data seeds) and the paired harm low - high with its spread."""
    wide = table.pivot(index="data_seed", columns="knob", values="mean")
    harm = wide[low] - wide[high]
    spread = lambda s: float(s.std(ddof=1)) if len(s) > 1 else float("nan")  # noqa: E731
    return {
        "knobs": {f"{k:g}": {"mean": round(float(wide[k].mean()), 2), "std": round(spread(wide[k]), 2)}
                  for k in wide.columns},
        "harm": round(float(harm.mean()), 2), "harm_std": round(spread(harm), 2),
        "harm_min": round(float(harm.min()), 2), "n_data_seeds": int(len(harm)),
        "beyond_spread": bool(harm.min() > 0 and harm.mean() > 2 * spread(harm)) if len(harm) > 1 else False,
    }


# ------------------------------------------------------------------------------------------- swap

def nearest_product_colour(word: str) -> str:
    """The product colour (a name colour of the generator) closest in RGB to a colour word."""
    from eiclip_core.synth.general_corpus import BRAND_COLOURS
    from eiclip_core.synth.world import COLOURS

    rgb = np.asarray(BRAND_COLOURS[word], float)
    return min(COLOURS, key=lambda c: float(np.sum((np.asarray(COLOURS[c], float) - rgb) ** 2)))


@torch.no_grad()
def brand_swap_pull(backbone, data_dir, words, n_queries: int = 200, k: int = 10, seed: int = 0,
                    device="cpu") -> pd.DataFrame:
    """Per colour word: top-k share of its nearest product colour after swapping the brand for it,
    after swapping for a made-up word, their difference (the pull) and the chance level."""
    from eiclip_core.data import EvalDataset
    from eiclip_core.evaluation.embeddings import encode_images, encode_texts
    from eiclip_core.analysis.counterfactual_swap import swap_value, top_k_share
    from eiclip_core.synth import load_ground_truth

    model = backbone_model(backbone)
    first_views = EvalDataset(layout.split_file(data_dir, "validation"), backbone.preprocess_val, views="first")
    images = encode_images(model, first_views, device)  # (products, d): item k is product k's first view
    products = first_views.data.products
    colours = np.array([name.split()[0].lower() for name in products["name"]])
    truth = {p["product_id"]: p for p in load_ground_truth(layout.ground_truth_file(data_dir))["splits"]["validation"]}
    mentions = [truth[int(pid)]["mentions"] for pid in products["product_id"]]
    texts = products["text"].tolist()
    with_brand = [i for i, m in enumerate(mentions) if any(t == "brand" for _, _, t, _ in m)]
    chosen = np.random.default_rng(seed).permutation(with_brand)[:n_queries]

    def swapped_to(new_brand: str) -> np.ndarray:
        texts_after = [swap_value(texts[i], mentions[i], "brand", new_brand) for i in chosen]
        # every query in one batch (a few hundred short texts)
        return encode_texts(model.encode_text, backbone.tokenizer, texts_after, device, batch_size=max(1, len(chosen)))

    def share(text_emb, colour: str) -> float:
        return 100 * float(top_k_share(text_emb, images, colours, [colour] * len(chosen), k).mean())

    control = swapped_to(CONTROL_BRAND)  # one made-up word serves as the control of every colour word
    rows = []
    for word in words:
        colour = nearest_product_colour(word)
        after, before = share(swapped_to(word.capitalize()), colour), share(control, colour)
        rows.append({"word": word, "product_colour": colour, "share_after_swap": round(after, 2),
                     "share_control_swap": round(before, 2), "pull": round(after - before, 2),
                     "chance": round(100 * float(np.mean(colours == colour)), 2)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- reports

def general_heldout(backbone_name: str) -> pd.DataFrame:
    """The general backbone's own held-out measures (from its weights' manifest), beside chance."""
    from eiclip_core.model.backbone import KIT_WEIGHTS
    from eiclip_core.train.pretrain_general import manifest_path

    if backbone_name not in KIT_WEIGHTS:
        return pd.DataFrame()
    heldout = json.loads(manifest_path(KIT_WEIGHTS[backbone_name]).read_text())["heldout"]
    return pd.DataFrame([
        {"measure": "colour named by prompt", "accuracy": heldout["colour_accuracy"], "chance": heldout["colour_chance"]},
        {"measure": "thing named by prompt", "accuracy": heldout["shape_accuracy"], "chance": heldout["shape_chance"]},
        {"measure": "caption ranked first", "accuracy": heldout["caption_r1"], "chance": None},
    ]).assign(n_images=heldout["n_heldout"])


def describe_harm(summary: dict) -> str:
    """One sentence on the harm that claims no more than the numbers: beyond the spread or not."""
    low, high = summary["knobs"]["0"], summary["knobs"]["1"]
    verdict = ("beyond the spread over data seeds (every seed shows it, and the mean harm exceeds twice its "
               "standard deviation)" if summary["beyond_spread"] else "not beyond the spread over data seeds")
    return (f"Zero-shot mean recall {low['mean']:.2f} at knob 0 against {high['mean']:.2f} at knob 1 "
            f"({summary['n_data_seeds']} data seeds): the confounding harm is {summary['harm']:.2f} points "
            f"(std {summary['harm_std']:.2f}), {verdict}.")


def write_measures(reports_dir, summary: dict, harm: pd.DataFrame, pull: pd.DataFrame) -> Path:
    """reports_dir/confounding.json: what notebook 01 measured, for results.json and the tests."""
    from eiclip_core.io import write_json

    path = Path(reports_dir) / "confounding.json"
    write_json(path, {"harm": summary, "harm_table": harm.round(4).to_dict(orient="records"),
                      "brand_swap": pull.to_dict(orient="records"),
                      "brand_swap_mean_pull": round(float(pull["pull"].mean()), 2) if len(pull) else None,
                      "brand_swap_positive": int((pull["pull"] > 0).sum()), "brand_swap_words": int(len(pull))})
    return path
