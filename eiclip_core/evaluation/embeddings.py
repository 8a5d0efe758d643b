"""Embeddings of a split under a model: the one encode loop and the embeddings cache.

Every embedding the kit scores or probes comes from `encode_batches`: evaluation (`extract_embeddings`),
the validation recall during training (eiclip_core.train.validation), the confounding harm and the brand
swap (eiclip_core.analysis.harm), the sweep, the linear probe and notebook 05's text features. So all of
them encode in one precision (`eval_autocast`: fp16 autocast on CUDA, fp32 elsewhere), in batches of
ENCODE_BATCH unless a caller names another size, and a recall measured in one place is the recall
measured in another.

Embeddings of every view and every text are computed once per (model, data file, device type) and
cached as plain arrays in `<data>/cache/emb-<key>.npz` (read with allow_pickle=False), so a second
evaluation only scores.
"""
import contextlib
import dataclasses
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eiclip_core.io import atomic_path, file_identity

ENCODE_BATCH = 64  # items per forward pass
CACHE_VERSION = 1  # bump when the extraction changes what the arrays hold


@dataclasses.dataclass
class Embeddings:
    """Validation embeddings of one model: every image view and one text per product."""

    image: np.ndarray  # (N_img, d) float32, every view, dataset order
    image_product: np.ndarray  # (N_img,) int64 product index of each view
    first_view: np.ndarray  # (N_prod,) int64 index into `image` of each product's first view
    text: np.ndarray  # (N_prod, d) float32

    @classmethod
    def one_view(cls, image: np.ndarray, text: np.ndarray) -> "Embeddings":
        """One image per product (row k of `image` and of `text` are product k's), as the validation
        during training encodes them."""
        products = np.arange(len(text), dtype=np.int64)
        return cls(image=image, image_product=products, first_view=products, text=text)

    def arrays(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ encoding


def eval_autocast(device: torch.device):
    """The precision every embedding is encoded in: fp16 autocast on CUDA, fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_batches(encode, batches, device) -> np.ndarray:
    """(N, d) float32 numpy of `encode(batch)` over `batches` (tensors, moved to `device`), in order, in
    eval_autocast, without grad: the one encode loop. Empty `batches`: a (0, 0) array."""
    device = torch.device(device)
    out = []
    for batch in batches:
        with eval_autocast(device):
            out.append(encode(batch.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def encode_images(model, dataset, device, batch_size: int = ENCODE_BATCH, num_workers: int = 0,
                  progress: bool = True, desc: str = "images") -> np.ndarray:
    """(len(dataset), d) float32 image embeddings of a dataset of (image, label) items in its order, the
    model in eval mode. progress=False: no bar (a caller with a bar of its own, the sweep)."""
    device = torch.device(device)
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    quiet = {} if progress else {"disable": True}  # otherwise tqdm's default, which TQDM_DISABLE=1 switches off
    return encode_batches(model.encode_image, (images for images, _ in tqdm(loader, desc=desc, leave=False, **quiet)),
                          device)


def encode_texts(encode, tokenizer, texts, device, batch_size: int = ENCODE_BATCH, progress: bool = False,
                 desc: str = "texts") -> np.ndarray:
    """(len(texts), d) float32 embeddings of `texts` by `encode(tokens) -> (B, d)` (a model's encode_text,
    or any text tower), tokenized a batch at a time."""
    quiet = {} if progress else {"disable": True}
    starts = tqdm(range(0, len(texts), batch_size), desc=desc, leave=False, **quiet)
    return encode_batches(encode, (tokenizer(list(texts[s:s + batch_size])) for s in starts), device)


def extract_embeddings(model, backbone, data_path, device, batch_size: int = ENCODE_BATCH, num_workers: int = 0,
                       views: str = "all", progress: bool = True) -> Embeddings:
    """Encode all views (or, views="first", each product's first view) and all texts of a split."""
    from eiclip_core.data import EvalDataset

    dataset = EvalDataset(data_path, backbone.preprocess_val, views=views)
    images = encode_images(model, dataset, device, batch_size, num_workers, progress,
                           desc=f"images {dataset.data.path.name}")
    texts = dataset.data.products["text"].tolist()
    text = encode_texts(model.encode_text, backbone.tokenizer, texts, device, batch_size, progress)
    row_to_item = {int(r): k for k, r in enumerate(dataset.rows)}
    first_view = np.array([row_to_item[int(r)] for r in dataset.data.first_row], dtype=np.int64)
    return Embeddings(image=images, image_product=dataset.product_index.astype(np.int64),
                      first_view=first_view, text=text)


# ------------------------------------------------------------------------------------ cache


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


def cached_embeddings(load_model, model_key: dict, split, cache_dir, device, batch_size: int = ENCODE_BATCH,
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
