"""Is each entity type recoverable from the image features? A linear probe per type.

Why: EI-CLIP can only align an entity value with pixels that show it. If a type (the brand's corner
mark, say) is not linearly decodable from a model's image features, no text-side module can help
with it. The probe fits a multinomial logistic regression per type on the first-view image features
of (up to PROBE_FIT_PRODUCTS) training products and reports its accuracy on every validation product,
beside the majority-class baseline.

The probe is fitted on the training split, not on half of the validation split: with 40 brands, 300
validation products leave a handful of examples per brand, too few to fit on, and such a probe reads
a visible mark as invisible (near the majority baseline) where one fitted on the training split reads it.
"""
import contextlib

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from eiclip_core.evaluation.embeddings import encode_images

PROBE_FIT_PRODUCTS = 2000  # training products the probe is fitted on: ~50 per brand at 40 brands


@contextlib.contextmanager
def one_thread():
    """Torch on one thread for the block: a probe's matrices are small, and with 2 threads each of LBFGS's
    many tiny steps pays a thread hand-off, which costs far more than the step itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def probe_accuracy(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   steps: int = 300, weight_decay: float = 1e-3) -> tuple:
    """(accuracy, majority baseline) on the test products of a linear classifier fitted on the fit ones.

    Features are standardised with the fit set's statistics; labels -1 (no value) are left out of both
    sets. A test value never seen in the fit set counts as a miss (the probe cannot name it)."""
    fit_keep, test_keep = fit_y >= 0, test_y >= 0
    classes, y = np.unique(fit_y[fit_keep], return_inverse=True)
    x = torch.as_tensor(fit_x[fit_keep], dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    y = torch.as_tensor(y)
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], len(classes))
    # a history of 10 pairs, scipy's L-BFGS-B default, not torch's 100: each step's direction loops over the
    # history in small tensor ops, so a longer history costs time a probe this small does not win back
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=steps, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x), y) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    with one_thread():
        optimizer.step(closure)
    test = (torch.as_tensor(test_x[test_keep], dtype=torch.float32) - mean) / std
    with torch.no_grad():
        predicted = classes[head(test).argmax(dim=1).numpy()]
    truth = test_y[test_keep]
    majority = classes[np.bincount(y.numpy()).argmax()]
    return float((predicted == truth).mean()), float((truth == majority).mean())


def unprobed_types(fit_ids: dict, test_ids: dict) -> dict:
    """{type: why} for the types a probe cannot be fitted or scored on: fewer than two distinct values
    among the training products that have one (a catalog that maps no brand has none), or fewer than
    four validation products with a value."""
    out = {}
    for entity_type, labels in fit_ids.items():
        known = np.asarray(labels)[np.asarray(labels) >= 0]
        scored = int((np.asarray(test_ids[entity_type]) >= 0).sum())
        if len(np.unique(known)) < 2 or scored < 4:
            out[entity_type] = (f"{len(known)} training products with a value, {len(np.unique(known))} distinct; "
                                f"{scored} validation products with a value")
    return out


def probe_table(fit: dict, test: dict, fit_ids: dict, test_ids: dict) -> pd.DataFrame:
    """Rows (model, type): accuracy and majority baseline in percent, for every model and entity type that
    can be probed (see unprobed_types; the others have no row).

    fit / test: model name -> (N, d) image features of the fit (training) and test (validation) products;
    fit_ids / test_ids: type -> value index per product in the same order, -1 = missing."""
    rows = []
    skipped = unprobed_types(fit_ids, test_ids)
    for model in fit:
        for entity_type in fit_ids:
            if entity_type in skipped:
                continue
            accuracy, majority = probe_accuracy(np.asarray(fit[model]), np.asarray(fit_ids[entity_type]),
                                                np.asarray(test[model]), np.asarray(test_ids[entity_type]))
            rows.append({"model": model, "type": entity_type, "accuracy": round(100 * accuracy, 1),
                         "majority": round(100 * majority, 1)})
    return pd.DataFrame(rows)


def fit_products(n_products: int, seed: int, limit: int = PROBE_FIT_PRODUCTS) -> np.ndarray:
    """Sorted indices of the training products a probe is fitted on: all, or a seeded sample of `limit`
    (a file may be ordered by category, so never its first rows)."""
    if n_products <= limit:
        return np.arange(n_products)
    return np.sort(np.random.default_rng(seed).choice(n_products, limit, replace=False))


def first_view_features(model, backbone, data_path, products: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    """(len(products), d) float32 image features of the first view of each listed product, encoded as the
    validation features the probe is scored on are (embeddings.encode_images, in eval_autocast)."""
    from eiclip_core.data import EvalDataset

    dataset = torch.utils.data.Subset(EvalDataset(data_path, backbone.preprocess_val, views="first"),
                                      products.tolist())
    return encode_images(model, dataset, device, batch_size=batch_size, progress=False)


def probe_runs(evaluation, data_dir, run_seed: int, device, seed: int = 0) -> tuple:
    """Notebook 04's probe: (probe_table, unprobed_types) for the zero-shot model and every run of training
    seed `run_seed` in an evaluate.Evaluation, fitted on the first views of fit_products(seed) training
    products and scored on the validation features the evaluation already holds."""
    from eiclip_core.entities import load_artifact
    from eiclip_core.layout import entities_file, split_file
    from eiclip_core.evaluation.results import row_label

    artifact = load_artifact(entities_file(data_dir))
    test_ids = {t: np.asarray(v) for t, v in artifact.value_ids("validation").items()}
    fit_ids = {t: np.asarray(v) for t, v in artifact.value_ids("train").items()}
    products = fit_products(len(artifact.product_ids("train")), seed)
    fit_ids = {t: v[products] for t, v in fit_ids.items()}
    fit, test = {}, {}
    chosen = [key for key in evaluation.loaders if key[1] in (None, run_seed)]
    for row, s in tqdm(chosen, desc="probe features"):
        model, backbone = evaluation.loaders[(row, s)]()
        fit[row_label(row)] = first_view_features(model, backbone, split_file(data_dir, "train"), products, device)
        emb = evaluation.embeddings[(row, s)]
        test[row_label(row)] = emb.image[emb.first_view]
    return probe_table(fit, test, fit_ids, test_ids), unprobed_types(fit_ids, test_ids)
