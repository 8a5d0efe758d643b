"""The names every stage shares: the rows compared and the retrieval protocols (METHOD.md sections 8, 10).

Torch-free, so that `eiclip import-catalog` can say whether its validation split is large enough for
sample-100 without importing torch (which would hold hundreds of MiB more at the end of an import).
"""
ZERO_SHOT = "zero-shot"  # the backbone before fine-tuning: evaluated, never trained
BASELINE, METHOD = "clip-ft", "ei-clip"  # the rows whose difference is EI-CLIP's effect
PROTOCOLS = ("full", "full-all-views", "sample-100")
SAMPLE100_NEGATIVES = 100  # negatives per query; with the positive, 101 candidates


def sample100_unmeasurable(n_products: int, n_negatives: int = SAMPLE100_NEGATIVES) -> "str | None":
    """Why sample-100 cannot be measured on a split of n_products (None when it can).

    Each query needs itself and n_negatives other products; with fewer, a number computed anyway would
    rank among fewer candidates and read as the protocol's while being easier, so it is not measured."""
    if n_products >= n_negatives + 1:
        return None
    return (f"{n_products} validation products, fewer than the {n_negatives + 1} candidates each query needs "
            "(import more products or raise --val-fraction)")
