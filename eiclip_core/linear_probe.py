"""Is each entity type recoverable from the image features? A linear probe per type.

Why: EI-CLIP can only align an entity value with pixels that show it. If a type (the brand's corner
mark, say) is not linearly decodable from a model's image features, no text-side module can help
with it. The probe fits a multinomial logistic regression per type on half of the validation
products (first view) and reports accuracy on the other half, beside the majority-class baseline.
"""
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0, steps: int = 200,
                   weight_decay: float = 1e-3) -> tuple:
    """(held-out accuracy, majority baseline) of a linear classifier on (N, d) features; labels -1 = missing."""
    keep = labels >= 0
    x = torch.as_tensor(features[keep], dtype=torch.float32)
    _, y = np.unique(labels[keep], return_inverse=True)
    y = torch.as_tensor(y)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    train, test = order[: len(y) // 2], order[len(y) // 2:]
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x[train]), y[train]) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = float((head(x[test]).argmax(dim=1) == y[test]).float().mean())
    majority = float((y[test] == torch.bincount(y[train]).argmax()).float().mean())
    return accuracy, majority


def unprobed_types(value_ids: dict) -> dict:
    """{type: why} for the types a probe cannot be fitted on: fewer than two distinct values among the
    products that have one (a catalog that maps no brand has none), or fewer than four such products."""
    out = {}
    for entity_type, labels in value_ids.items():
        known = np.asarray(labels)[np.asarray(labels) >= 0]
        if len(np.unique(known)) < 2 or len(known) < 4:
            out[entity_type] = f"{len(known)} validation products with a value, {len(np.unique(known))} distinct"
    return out


def probe_table(image_features: dict, value_ids: dict, seed: int = 0) -> pd.DataFrame:
    """Rows (model, type): accuracy and majority baseline in percent, for every model and entity type that
    can be probed (see unprobed_types; the others have no row).

    image_features: model name -> (N_products, d); value_ids: type -> (N_products,) value index, -1 missing.
    """
    rows = []
    skipped = unprobed_types(value_ids)
    for model, features in image_features.items():
        for entity_type, labels in value_ids.items():
            if entity_type in skipped:
                continue
            accuracy, majority = probe_accuracy(np.asarray(features), np.asarray(labels), seed)
            rows.append({"model": model, "type": entity_type, "accuracy": round(100 * accuracy, 1),
                         "majority": round(100 * majority, 1)})
    return pd.DataFrame(rows)
