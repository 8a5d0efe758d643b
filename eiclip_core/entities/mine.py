"""Mine a data set into its entity artifact: `eiclip mine --train X --validation Y --out Z`.

    eiclip mine --train data/smoke/train.h5 --validation data/smoke/validation.h5 \\
                --out data/smoke/entities.json [--backbone eiclip-tiny] [--min-count 2]

Vocabularies, counts and priors come from the training products only; validation values unseen in
training map to "other". Mentions are searched in product_text(name, description) of both splits
with every metadata value of both splits (the metadata is an input of the data set, not a label
of retrieval); fit is mined from text alone, so a product's fit is the first fit its text names.
"""
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from eiclip_core.entities.artifact import EntityArtifact, write_artifact
from eiclip_core.entities.miner import FIT_WORDS, EntityMiner
from eiclip_core.entities.vocab import (ALL_TYPES, MENTION_TYPES, METADATA_TYPES, MODEL_TYPES,
                                        backbone_tokenizer, build_vocabulary, parse_composition,
                                        prone_flags)
from eiclip_core.data.product_text import normalise_value


def product_values(products, entity_type: str) -> list:
    """Normalised value of one metadata type per product ("" = missing); composition is parsed."""
    if entity_type == "composition":
        return [parse_composition(v).main for v in products[entity_type]]
    return [normalise_value(v) for v in products[entity_type]]


def mine_products(splits: dict, tokenize: Optional[Callable[[str], list]] = None, *, min_count: int = 2,
                  alpha: float = 1.0, max_pieces: int = 4, types=MODEL_TYPES,
                  mention_types=MENTION_TYPES, fit_words=FIT_WORDS, progress: bool = True,
                  backbone: Optional[str] = None, sources: Optional[dict] = None, n_process: int = 1) -> dict:
    """Artifact content (unstamped) from products tables: {"train": df, "validation": df, ...}.

    Each table has the FashionGen.products columns product_id, text and the metadata types. The
    first split must be "train". `tokenize` (str -> pieces) drives the prone flags; None flags none.
    n_process > 1 mines in that many forked processes (EntityMiner.iter_find).
    """
    if next(iter(splits), None) != "train":
        raise ValueError("the first split must be 'train' (vocabularies come from it)")
    values = {s: {t: product_values(df, t) for t in METADATA_TYPES} for s, df in splits.items()}

    # Matcher vocabulary: every value of every split, with the raw spellings seen for it.
    known, raw_forms = defaultdict(set), defaultdict(lambda: defaultdict(set))
    for s, df in splits.items():
        for t in mention_types:
            if t == "fit":
                continue
            for v, raw in zip(values[s][t], df[t]):
                if v:
                    known[t].add(v)
                    if t != "composition" and isinstance(raw, str) and len(raw_forms[t][v]) < 4:
                        raw_forms[t][v].add(raw.strip())
    miner = EntityMiner({t: sorted(known[t]) for t in mention_types if t != "fit"},
                        fit_words=fit_words if "fit" in mention_types else (),
                        raw_forms={t: {v: sorted(r) for v, r in d.items()} for t, d in raw_forms.items()})
    mentions = {}
    for s, df in splits.items():
        found = miner.iter_find(df["text"], progress=progress, total=len(df), n_process=n_process)
        mentions[s] = [[[a, b, t, v] for a, b, t, v in ms] for ms in found]
        values[s]["fit"] = [next((v for _, _, t, v in ms if t == "fit"), "") for ms in mentions[s]]

    vocab, split_out = {}, {s: {"n_products": len(df), "product_id": [int(p) for p in df["product_id"]],
                                "value_ids": {}, "mentions": mentions[s]} for s, df in splits.items()}
    for t in ALL_TYPES:
        voc = build_vocabulary(values["train"][t], min_count=min_count, alpha=alpha)
        flags, reasons = prone_flags(voc.values, tokenize, max_pieces=max_pieces)
        vocab[t] = {"values": voc.values, "counts": voc.counts.tolist(), "prior": voc.prior.tolist(),
                    "prone": flags.tolist(), "prone_reason": reasons,
                    "coverage": {s: coverage(values[s][t], mentions[s], t) for s in splits}}
        for s in splits:
            split_out[s]["value_ids"][t] = voc.ids(values[s][t]).tolist()
    # The model's types are those the training split has values of: a type a catalog does not map (or
    # a fit word no text uses) would give EI-CLIP a dictionary of "other" alone, a confounder of nothing.
    used = [t for t in types if any(values["train"][t])]
    return {"types": used, "all_types": list(ALL_TYPES),
            "params": {"min_count": min_count, "smoothing": "additive", "alpha": alpha,
                       "max_pieces": max_pieces, "prone_tokenizer": backbone if tokenize else None,
                       "mention_types": list(mention_types), "fit_words": list(fit_words)},
            "sources": dict(sources or {}), "vocab": vocab, "splits": split_out}


def coverage(values: list, mentions: list, entity_type: str) -> float:
    """Share of products with a value for `entity_type` whose text mentions that value.

    For fit, whose value comes from the text itself, this is the share of products with a fit mention.
    """
    has, hit = 0, 0
    for v, ms in zip(values, mentions):
        if entity_type == "fit":
            has, hit = has + 1, hit + bool(v)
        elif v:
            has += 1
            hit += any(t == entity_type and value == v for _, _, t, value in ms)
    return round(hit / has, 6) if has else 0.0


def mine_dataset(train_path, validation_path, out_path, tokenizer=None, *, backbone: str = "eiclip-tiny",
                 min_count: int = 2, alpha: float = 1.0, max_pieces: int = 4,
                 progress: bool = True, n_process: int = 1) -> EntityArtifact:
    """Read the two Fashion-Gen files, mine them, write `out_path` atomically; returns the artifact.

    tokenizer: str -> pieces for the prone flags; None loads the backbone's (see backbone_tokenizer).
    """
    from eiclip_core.data import FashionGen  # the reader raises KitError naming a bad file

    tokenize = tokenizer if tokenizer is not None else backbone_tokenizer(backbone)  # an unknown name fails first
    splits = {"train": FashionGen(train_path).products}
    if validation_path is not None:
        splits["validation"] = FashionGen(validation_path).products
    content = mine_products(splits, tokenize, min_count=min_count, alpha=alpha, max_pieces=max_pieces,
                            progress=progress, n_process=n_process,
                            backbone=backbone if tokenizer is None else "custom",
                            sources={"train": Path(train_path).name,
                                     **({"validation": Path(validation_path).name} if validation_path else {})})
    return write_artifact(out_path, content)


def summary(art: EntityArtifact) -> str:
    """A few lines for people: vocabulary size, prone count and coverage per type."""
    lines = [f"entity artifact {art.id}: " + ", ".join(f"{s} {art.n_products(s)} products" for s in art.splits)]
    for t in art.all_types:
        cov = ", ".join(f"{s} {c:.2f}" for s, c in art.coverage[t].items())
        lines.append(f"  {t:<12} {len(art.values[t]):>5} values  {int(np.sum(art.prone[t])):>4} prone  coverage {cov}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--train", required=True, help="training split (Fashion-Gen HDF5)")
    parser.add_argument("--validation", help="validation split (Fashion-Gen HDF5)")
    parser.add_argument("--out", required=True, help="artifact to write, e.g. data/smoke/entities.json")
    parser.add_argument("--backbone", default="eiclip-tiny",
                        help="tokenizer for the confounding-prone flags (eiclip-tiny or an open_clip model name)")
    parser.add_argument("--min-count", type=int, default=2,
                        help="values in fewer training products than this go to 'other'")
    parser.add_argument("--max-pieces", type=int, default=4,
                        help="a value split into at least this many tokenizer pieces is confounding-prone")
    parser.add_argument("--processes", type=int, default=1,
                        help="mining processes (forked; bench/mining.py measures the rate)")


def run(args) -> int:
    art = mine_dataset(args.train, args.validation, args.out, backbone=args.backbone,
                       min_count=args.min_count, max_pieces=args.max_pieces, n_process=args.processes)
    print(summary(art))
    print(f"wrote {args.out}")
    return 0
