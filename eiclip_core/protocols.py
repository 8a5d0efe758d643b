"""How many products the sample-100 protocol needs (METHOD.md section 10), without torch.

Kept apart from sample100.py, which imports torch: `eiclip import-catalog` warns about a too-small
validation split from this rule, and importing torch there added ~470 MiB to the importer's memory
at the very end of the run (the end-of-run peak bench/import.py showed).
"""
SAMPLE100_NEGATIVES = 100  # negatives per query; with the positive, 101 candidates


def sample100_unmeasurable(n_products: int, n_negatives: int = SAMPLE100_NEGATIVES) -> "str | None":
    """Why sample-100 cannot be measured on a split of n_products (None when it can).

    Each query needs itself and n_negatives other products; with fewer, a number computed anyway would
    rank among fewer candidates and read as the protocol's while being easier, so it is not measured."""
    if n_products >= n_negatives + 1:
        return None
    return (f"{n_products} validation products, fewer than the {n_negatives + 1} candidates each query needs "
            "(import more products or raise --val-fraction)")
