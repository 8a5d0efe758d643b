"""`eiclip evaluate`: embed the validation split with every run, score it under the three protocols,
and write the results table (METHOD.md section 10, FASHIONGEN.md "Evaluation protocols").

    eiclip evaluate --profile smoke                     # data/smoke -> reports/smoke/results.{json,md}
    eiclip evaluate --profile quick --device cuda

Rows: CLIP zero-shot (the untrained backbone), then the profile's trained rows (CLIP-FT, EI-CLIP,
ablations), each seed's run from `data/<profile>/runs/<row>/seed<k>/final.pt`. Embeddings of every
view and every text are computed once per (checkpoint content, data file, device type) and cached
as plain arrays in `data/<profile>/cache/emb-<key>.npz` (read with allow_pickle=False), so a second
evaluation only scores. The sample-100 draws and the bootstrap use the `seed` given here (default 0),
not the training seed, so the spread over training seeds is not mixed with a different sample.
"""
import contextlib
import dataclasses
import functools
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eiclip_core import layout
from eiclip_core.model.checkpoint import checkpoint_id
from eiclip_core.errors import KitError
from eiclip_core.io import atomic_path, write_json, write_text
from eiclip_core.evaluation.metrics import KS, metric_keys, recalls, retrieval_ranks
from eiclip_core.evaluation.sample100 import sample100_metrics, sample100_unmeasurable
from eiclip_core.evaluation.results import (PROTOCOLS, breakdown_table, published_records, results_markdown,
                                 summary_table)
from eiclip_core.train.run_directory import file_identity

ZERO_SHOT = "zero-shot"
SPLIT = "validation"
BOOTSTRAP_SAMPLES = 1000
CACHE_VERSION = 1  # bump when the extraction changes what the arrays hold


@dataclasses.dataclass
class Embeddings:
    """Validation embeddings of one model: every image view and one text per product."""

    image: np.ndarray  # (N_img, d) float32, every view, dataset order
    image_product: np.ndarray  # (N_img,) int64 product index of each view
    first_view: np.ndarray  # (N_prod,) int64 index into `image` of each product's first view
    text: np.ndarray  # (N_prod, d) float32

    def arrays(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ extraction


def eval_autocast(device: torch.device):
    """The precision evaluation encodes in: fp16 autocast on CUDA, fp32 elsewhere. `extract_embeddings`
    and the validation during training (eiclip_core.train.validation) share it, so their recalls agree."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_images(model, dataset, device, batch_size: int = 64, num_workers: int = 0,
                  progress: bool = True) -> np.ndarray:
    """(len(dataset), d) float32 image embeddings of an EvalDataset in its item order: batched, no grad,
    fp16 autocast on CUDA. progress=False: no bar (a caller with a bar of its own, the sweep)."""
    device = torch.device(device)
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    quiet = {} if progress else {"disable": True}  # otherwise tqdm's default, which TQDM_DISABLE=1 switches off
    images = []
    for batch, _ in tqdm(loader, desc=f"images {dataset.data.path.name}", leave=False, **quiet):
        with eval_autocast(device):
            images.append(model.encode_image(batch.to(device, non_blocking=True)).float().cpu())
    return torch.cat(images).numpy()


@torch.no_grad()
def extract_embeddings(model, backbone, data_path, device, batch_size: int = 64, num_workers: int = 0,
                       views: str = "all", progress: bool = True) -> Embeddings:
    """Encode all views (or, views="first", each product's first view) and all texts of a split, as
    encode_images does."""
    from eiclip_core.data import EvalDataset

    device = torch.device(device)
    dataset = EvalDataset(data_path, backbone.preprocess_val, views=views)
    images = encode_images(model, dataset, device, batch_size, num_workers, progress)
    texts = dataset.data.products["text"].tolist()
    text_emb = []
    quiet = {} if progress else {"disable": True}
    for s in tqdm(range(0, len(texts), batch_size), desc="texts", leave=False, **quiet):
        tokens = backbone.tokenizer(texts[s:s + batch_size]).to(device)
        with eval_autocast(device):
            text_emb.append(model.encode_text(tokens).float().cpu())
    row_to_item = {int(r): k for k, r in enumerate(dataset.rows)}
    first_view = np.array([row_to_item[int(r)] for r in dataset.data.first_row], dtype=np.int64)
    return Embeddings(image=images, image_product=dataset.product_index.astype(np.int64),
                      first_view=first_view, text=torch.cat(text_emb).numpy())


def cache_key(model_key: dict, data_path, device) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "model": model_key, "data": file_identity(data_path),
                       "views": "all", "device": torch.device(device).type}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_cached(path, n_images: int | None = None, n_products: int | None = None) -> "Embeddings | None":
    """The cached arrays, or None when missing; a damaged cache is reported in one warning naming the file,
    and ignored (then recomputed and rewritten by cached_embeddings).

    Damaged includes arrays of the wrong size or shape: not (n_images, d) image rows and (n_products, d)
    texts of the split, or indices outside them. Recomputing rather than refusing, because a cache holds
    nothing a user made: the right repair is always to compute it again, and a refusal would only ask
    them to delete the file by hand."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            emb = Embeddings(**{k: f[k] for k in Embeddings.__dataclass_fields__})
        _check_cached_shapes(emb, n_images, n_products)
        return emb
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        warnings.warn(f"{path}: unreadable embedding cache ({e}); recomputing it")
        return None


def _check_cached_shapes(emb: Embeddings, n_images, n_products) -> None:
    """ValueError naming the first array whose size or shape does not fit the others (or the split's)."""
    n_img = len(emb.image) if n_images is None else n_images
    n_prod = len(emb.text) if n_products is None else n_products
    dim = emb.text.shape[-1] if emb.text.ndim else 0
    expected = {"image": (n_img, dim), "image_product": (n_img,), "first_view": (n_prod,), "text": (n_prod, dim)}
    for name, shape in expected.items():
        if getattr(emb, name).shape != shape:
            raise ValueError(f"array {name} has shape {getattr(emb, name).shape}, expected {shape}")
    if n_img and (emb.image_product.min() < 0 or emb.image_product.max() >= n_prod
                  or emb.first_view.min() < 0 or emb.first_view.max() >= n_img):
        raise ValueError("indices outside the arrays")


def save_cached(path, emb: Embeddings) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
        np.savez(f, **emb.arrays())


def cached_embeddings(load_model, model_key: dict, split, cache_dir, device, batch_size: int = 64,
                      progress: bool = True) -> Embeddings:
    """Embeddings of `split` (an open FashionGen, whose sizes the cache must fit) from the cache, or
    extracted with `load_model() -> (model, backbone)` and cached."""
    path = Path(cache_dir) / f"emb-{cache_key(model_key, split.path, device)}.npz"
    emb = load_cached(path, split.n_rows, len(split))
    if emb is None:
        model, backbone = load_model()
        emb = extract_embeddings(model, backbone, split.path, device, batch_size=batch_size, progress=progress)
        save_cached(path, emb)
    return emb


# ------------------------------------------------------------------------------------ scoring


def evaluate_embeddings(emb: Embeddings, product_ids, subcategories, protocols=PROTOCOLS,
                        n_sample_queries: int = 1000, seed: int = 0, bootstrap: int = BOOTSTRAP_SAMPLES) -> dict:
    """protocol -> {"metrics": ..., "n_queries", "n_candidates", "ranks": (i2t, t2i) or None}.

    Full protocols carry `<key>_ci` 95 % bootstrap intervals over queries; sample-100 its `*_std`.
    """
    pids = np.asarray(product_ids)
    n_prod = len(pids)
    out = {}
    for protocol in protocols:
        if protocol == "full":
            img, img_pids = emb.image[emb.first_view], pids
        elif protocol == "full-all-views":
            img, img_pids = emb.image, pids[emb.image_product]
        elif protocol == "sample-100":
            m = sample100_metrics(emb.image[emb.first_view], emb.text, pids, subcategories,
                                  n_queries=min(n_sample_queries, n_prod), seed=seed)
            out[protocol] = {"metrics": m, "n_queries": min(n_sample_queries, n_prod),
                             "n_candidates": 101, "ranks": None}
            continue
        else:
            raise KitError(f"protocol {protocol!r}: unknown (choose from {', '.join(PROTOCOLS)})")
        i2t, t2i = retrieval_ranks(img, emb.text, img_pids, pids)
        m = recalls(i2t, t2i)
        m.update(bootstrap_intervals(i2t, t2i, same_queries=protocol == "full", n=bootstrap, seed=seed))
        out[protocol] = {"metrics": m, "n_queries": {"i2t": len(img), "t2i": n_prod},
                         "n_candidates": {"i2t": n_prod, "t2i": len(img)}, "ranks": (i2t, t2i)}
    return out


def bootstrap_intervals(i2t, t2i, same_queries: bool, n: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """95 % percentile intervals over queries for every metric key: {"<key>_ci": [lo, hi]}.

    same_queries: both directions have the same query products (full protocol), so they are resampled
    together; otherwise each direction's queries are resampled independently.
    """
    rng = np.random.default_rng([seed, 20220601])
    i2t, t2i = np.asarray(i2t), np.asarray(t2i)
    samples = {k: [] for k in metric_keys()}
    for start in range(0, n, 100):  # 100 resamples at a time: (100, n_queries) indices in memory
        b = min(100, n - start)
        a = rng.integers(0, len(i2t), (b, len(i2t)))
        c = a if same_queries else rng.integers(0, len(t2i), (b, len(t2i)))
        ranks = {"i2t": i2t[a], "t2i": t2i[c]}
        per_key = {f"{d}_r{k}": 100.0 * (ranks[d] < k).mean(axis=1) for d in ("i2t", "t2i") for k in KS}
        per_key["mean"] = np.mean(list(per_key.values()), axis=0)
        for k in samples:
            samples[k].append(per_key[k])
    return {f"{k}_ci": [float(np.percentile(np.concatenate(v), 2.5)), float(np.percentile(np.concatenate(v), 97.5))]
            for k, v in samples.items()}


def entity_breakdown(i2t, t2i, artifact, n_products: int) -> list[dict]:
    """Recall of the full protocol's queries grouped per entity type: prone versus not-prone values.

    A query (one per product in both directions) belongs to type t's "prone" group when its product's
    value of t is confounding-prone in the artifact, "not prone" when it has another value; products
    without a value of t are left out. Returns records (type, status, n, metric keys).
    """
    value_ids = artifact.value_ids(SPLIT)
    out = []
    for t in artifact.types:
        v = value_ids[t]
        if len(v) != n_products:
            raise KitError(f"{artifact.path}: {len(v)} {SPLIT} products for type {t!r}, the data has {n_products}")
        prone = np.zeros(n_products, dtype=bool)
        prone[v >= 0] = artifact.prone[t][v[v >= 0]]
        for status, mask in (("prone", (v >= 0) & prone), ("not prone", (v >= 0) & ~prone)):
            if mask.any():
                out.append({"type": t, "status": status, "n": int(mask.sum()),
                            **recalls(np.asarray(i2t)[mask], np.asarray(t2i)[mask])})
    return out


# ------------------------------------------------------------------------------------ a profile


@dataclasses.dataclass
class Evaluation:
    """Everything notebook 04 shows: records, breakdown, tables, and embeddings for examples."""

    profile: str
    records: list  # one per row x protocol x seed (metric keys, protocol, n_queries, ...)
    breakdown: list  # one per row x seed x type x status
    summary: object  # pandas DataFrame (results.summary_table)
    breakdown_summary: object  # pandas DataFrame (results.breakdown_table)
    embeddings: dict  # (row, seed) -> Embeddings
    data_path: Path
    published: bool  # real data: the papers' numbers stand beside ours
    not_measured: dict = dataclasses.field(default_factory=dict)  # protocol -> why it has no records
    loaders: dict = dataclasses.field(default_factory=dict)  # (row, seed) -> () -> (model, backbone)

    def to_json(self) -> dict:
        return {"profile": self.profile, "split": SPLIT,
                "protocols": [p for p in PROTOCOLS if p not in self.not_measured],
                "not_measured": self.not_measured, "records": self.records, "breakdown": self.breakdown,
                "published": published_records() if self.published else []}


def run_dirs(data_dir, rows, seeds, artifact_id: str) -> list[tuple[str, int, Path]]:
    """(row, seed, run dir) of every finished run the profile needs; KitError naming a missing one, or
    one trained on another entity artifact than `artifact_id` (its numbers would describe other data)."""
    out = []
    for row in rows:
        for seed in seeds:
            d = layout.run_dir(data_dir, row, seed)
            if not all((d / f).is_file() for f in ("config.json", "final.pt", "done.json")):
                raise KitError(f"{d}: run not finished (no config.json / final.pt / done.json); "
                               "train it with notebook 03 or `eiclip train`")
            trained_on = json.loads((d / "config.json").read_text()).get("entity_artifact_id")
            if trained_on != artifact_id:
                raise KitError(f"{d}: run trained on entity artifact {trained_on}, the data's is {artifact_id} "
                               "(train it again on this data)")
            out.append((row, seed, d))
    return out


def evaluate_profile(profile, data_dir, device="auto", seed: int = 0, batch_size: int = 64,
                     protocols=PROTOCOLS) -> Evaluation:
    """Evaluate the zero-shot row and every trained run of `profile` on `data_dir`'s validation split.

    A protocol the split is too small for (sample-100 below 101 products, as on a small imported
    catalog) is left out with one printed line and listed in `not_measured`, never scored on fewer
    candidates."""
    from eiclip_core.data import FashionGen
    from eiclip_core.entities import load_artifact
    from eiclip_core.pipeline.profiles import get_profile
    from eiclip_core.runtime import resolve_device
    from eiclip_core.model.factory import load_run, zero_shot

    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = resolve_device(device) if isinstance(device, str) else device
    data_dir = Path(data_dir)
    data_path = layout.split_file(data_dir, SPLIT)
    entities_path = layout.entities_file(data_dir)
    artifact = load_artifact(entities_path)
    split = FashionGen(data_path)
    products = split.products
    pids = products["product_id"].to_numpy()
    if not np.array_equal(artifact.product_ids(SPLIT), pids):
        raise KitError(f"{entities_path}: its {SPLIT} product ids differ from {data_path} (re-run `eiclip mine`)")
    runs = run_dirs(data_dir, profile.rows, profile.seeds, artifact.id)  # fail before any work if one is missing
    not_measured = {"sample-100": sample100_unmeasurable(len(pids))} if "sample-100" in protocols else {}
    not_measured = {p: why for p, why in not_measured.items() if why}
    for protocol, why in not_measured.items():
        print(f"{protocol}: not measured on {data_path}: {why}")
    protocols = [p for p in protocols if p not in not_measured]
    cache = layout.cache_dir(data_dir)

    jobs = [(ZERO_SHOT, None, None)] + runs
    records, breakdown, embeddings, loaders = [], [], {}, {}
    for row, run_seed, run_dir in tqdm(jobs, desc="runs"):
        if run_dir is None:
            key = {"zero_shot": profile.train.backbone, "pretrained": profile.train.pretrained, "entities": artifact.id}
            load = lambda: zero_shot(profile.train.backbone, profile.train.pretrained, entities_path, device)  # noqa: E731
            ckpt_hash, shown_dir = None, None
        else:
            ckpt_hash = checkpoint_id(run_dir / "final.pt")
            key = {"checkpoint": ckpt_hash}
            load = lambda d=run_dir: load_run(d, device)[:2]  # noqa: E731
            shown_dir = str(run_dir)
        load = functools.cache(load)  # loaded at most once: for the embeddings and again for notebook 04's probe
        emb = cached_embeddings(load, key, split, cache, device, batch_size=batch_size)
        embeddings[(row, run_seed)], loaders[(row, run_seed)] = emb, load
        scored = evaluate_embeddings(emb, pids, products["subcategory"].to_numpy(), protocols,
                                     n_sample_queries=profile.sample100_queries, seed=seed)
        for protocol, s in scored.items():
            records.append({"row": row, "protocol": protocol, "seed": run_seed, **s["metrics"],
                            "n_queries": s["n_queries"], "n_candidates": s["n_candidates"],
                            "sample_seed": seed, "run_dir": shown_dir, "checkpoint_hash": ckpt_hash})
        if "full" in scored:
            for rec in entity_breakdown(*scored["full"]["ranks"], artifact, len(pids)):
                breakdown.append({"row": row, "seed": run_seed, **rec})
    summary = summary_table(records, published=profile.real_data)
    return Evaluation(profile=profile.name, records=records, breakdown=breakdown, summary=summary,
                      breakdown_summary=breakdown_table(breakdown), embeddings=embeddings, data_path=data_path,
                      published=profile.real_data, not_measured=not_measured, loaders=loaders)


def write_results(evaluation: Evaluation, reports_dir) -> tuple[Path, Path]:
    """results.json and results.md under reports_dir, each written atomically."""
    reports_dir = Path(reports_dir)
    json_path, md_path = reports_dir / "results.json", reports_dir / "results.md"
    results = evaluation.to_json()
    measured = reports_dir / "confounding.json"  # notebook 01: the confounder before fine-tuning
    if measured.is_file():
        results["confounding"] = json.loads(measured.read_text())
    write_json(json_path, results)
    write_text(md_path, results_markdown(evaluation.profile, evaluation.summary, evaluation.breakdown_summary,
                                         evaluation.not_measured))
    return json_path, md_path


def retrieval_examples(emb: Embeddings, texts, n: int = 3, k: int = 5, seed: int = 0, queries=None) -> list[dict]:
    """Text queries with their top-k products (full protocol, first views, exact tie rule): the given
    `queries` (product indices), or n drawn with `seed`. Each: query (its own product is the positive),
    text, top, scores, rank (0-based rank of the positive); eiclip_core.figures draws them."""
    if queries is None:
        queries = np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False)
    images = emb.image[emb.first_view]
    out = []
    for q in queries:
        scores = images @ emb.text[q]
        order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then index asc
        out.append({"query": int(q), "text": texts[q], "top": order[:k].tolist(),
                    "scores": scores[order[:k]].tolist(), "rank": int(np.flatnonzero(order == q)[0])})
    return out


# ------------------------------------------------------------------------------------ CLI


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="smoke", help="profile name (eiclip_core/pipeline/profiles.py)")
    parser.add_argument("--data-dir", default=None, help="default: data/<profile> (data/fashiongen for real data)")
    parser.add_argument("--reports", default=None, help="default: reports/<profile>")
    parser.add_argument("--device", default="auto", help='"auto" (cuda if available), "cpu", "cuda", ...')
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample-100 draws and the bootstrap")
    parser.add_argument("--batch-size", type=int, default=64)


def run(args) -> int:
    from eiclip_core.pipeline.reproduce import default_dirs
    from eiclip_core.pipeline.profiles import get_profile
    from eiclip_core.evaluation.results import display_table, to_markdown

    profile = get_profile(args.profile)
    default_data, default_reports = default_dirs(profile)
    evaluation = evaluate_profile(profile, args.data_dir or default_data, device=args.device, seed=args.seed,
                                  batch_size=args.batch_size)
    json_path, md_path = write_results(evaluation, args.reports or default_reports)
    print(to_markdown(display_table(evaluation.summary)))
    print(f"wrote {json_path} and {md_path}")
    return 0
