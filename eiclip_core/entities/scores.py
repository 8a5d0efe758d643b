"""Precision and recall of mention detection against a reference (the generator's ground truth).

A predicted mention counts as correct only if (start, end, type, value) all equal a reference
mention: exact spans, so an off-by-one offset or a wrong value is an error, not a near miss.
"""
import pandas as pd


def mention_scores(predicted: list, reference: list, types=None) -> pd.DataFrame:
    """Per type: true positives, predicted, reference, precision, recall, F1.

    predicted / reference: one list per text of (start, end, type, value). `types` defaults to the
    types found in the reference. A type with nothing predicted has precision 1 (no false alarm);
    with nothing to find, recall 1.
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted texts, {len(reference)} reference texts")
    pred = [{tuple(m) for m in ms} for ms in predicted]
    ref = [{tuple(m) for m in ms} for ms in reference]
    types = list(types) if types is not None else sorted({m[2] for ms in ref for m in ms})
    rows = []
    for t in types:
        tp = sum(len({m for m in p if m[2] == t} & r) for p, r in zip(pred, ref))
        n_pred = sum(m[2] == t for p in pred for m in p)
        n_ref = sum(m[2] == t for r in ref for m in r)
        precision = tp / n_pred if n_pred else 1.0
        recall = tp / n_ref if n_ref else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"type": t, "tp": tp, "predicted": n_pred, "reference": n_ref,
                     "precision": precision, "recall": recall, "f1": f1})
    return pd.DataFrame(rows).set_index("type")


def mention_errors(predicted: list, reference: list, texts: list, entity_type: str, limit: int = 10) -> list:
    """Up to `limit` disagreements for one type: (kind, text snippet, mention), kind "extra" or "missed"."""
    out = []
    for p, r, text in zip(predicted, reference, texts):
        p = {tuple(m) for m in p if m[2] == entity_type}
        r = {tuple(m) for m in r if m[2] == entity_type}
        for kind, ms in (("extra", p - r), ("missed", r - p)):
            for m in sorted(ms):
                out.append((kind, text[max(0, m[0] - 25): m[1] + 25], m))
                if len(out) >= limit:
                    return out
    return out


def reference_mentions(ground_truth: dict, split: str) -> list:
    """Per product of `split`, its reference mentions as (start, end, type, value) tuples."""
    return [[tuple(m) for m in p["mentions"]] for p in ground_truth["splits"][split]]
