"""The results table: our rows x protocols with their spread, the entity breakdown, the paper's numbers.

Input is the list of records `eiclip_core.evaluation.evaluate` produces (one per row x protocol x seed, every
metric key in percent); output is a summary DataFrame and Markdown (its figure: eiclip_core.figures.recall_figure).
Spread: the standard deviation over seeds (ddof=1) when a row has several seeds; with one seed, a
95 % bootstrap interval over queries (full protocols) or the standard deviation over the 5 seeded
sampling repeats (sample-100). The column `spread` says which.
"""
import numpy as np
import pandas as pd

from eiclip_core.evaluation.metrics import KS, metric_keys
from eiclip_core.protocols import BASELINE, METHOD, PROTOCOLS, ZERO_SHOT

ROW_LABELS = {ZERO_SHOT: "CLIP zero-shot", BASELINE: "CLIP-FT", METHOD: "EI-CLIP",
              "intervention-all": "ablation: intervention-all", "cesm": "ablation: CESM only",
              "ealm-only": "ablation: EALM only"}
KEYS = metric_keys(KS)

# FASHIONGEN.md "Published numbers": (method, protocol, {key: value}, source). Percent.
PUBLISHED = [
    ("FashionBERT", "sample-100", dict(zip(KEYS[:6], (23.96, 46.31, 52.12, 26.75, 46.48, 55.74))),
     "FashionBERT (SIGIR 2020)"),
    ("KaleidoBERT", "sample-100", dict(zip(KEYS[:6], (27.99, 60.09, 68.37, 33.88, 60.60, 68.59))),
     "KaleidoBERT (CVPR 2021)"),
    ("EI-CLIP", "sample-100", dict(zip(KEYS, (38.70, 72.20, 84.25, 40.06, 71.99, 82.90, 65.02))),
     "as re-reported by FAME-ViL (CVPR 2023, Table 1)"),
    ("FashionViL", "sample-100", dict(zip(KEYS, (65.54, 91.34, 96.30, 61.88, 87.32, 93.22, 82.60))),
     "FAME-ViL (CVPR 2023, Table 1)"),
    ("FAME-ViL", "sample-100", dict(zip(KEYS, (65.94, 91.92, 97.22, 62.86, 87.38, 93.52, 83.14))),
     "FAME-ViL (CVPR 2023, Table 1)"),
    ("CLIP fine-tuning (ViT-B/16)", "full", {"mean": 66.30}, "FAME-ViL (CVPR 2023, Table 4)"),
    ("FAME-ViL (best variant)", "full", {"mean": 72.32}, "FAME-ViL (CVPR 2023, Table 4; 69.99-72.32 by variant)"),
]


def row_label(row: str) -> str:
    return ROW_LABELS.get(row, row)


def published_records() -> list[dict]:
    """The paper-side numbers as records, each labelled with its protocol and source."""
    out = []
    for method, protocol, values, source in PUBLISHED:
        rec = {"row": method, "label": f"{method} (published)", "protocol": protocol, "source": source}
        for k in KEYS:
            rec[k] = values.get(k)
        if rec["mean"] is None and all(rec[k] is not None for k in KEYS[:6]):
            rec["mean"] = round(float(np.mean([rec[k] for k in KEYS[:6]])), 2)
        out.append(rec)
    return out


def summary_table(records: list[dict], published: bool = False) -> pd.DataFrame:
    """One line per row x protocol: the mean over seeds of every metric and its spread.

    records: dicts with row, protocol, seed and the metric keys; with one seed a record must carry
    `<key>_ci` ([lo, hi] 95 % bootstrap interval over queries) or, for sample-100, `<key>_std`
    (over sampling repeats). Columns: row, protocol, seeds, the metric keys, `spread` (the spread
    of `mean`, with its kind), and `<key>_lo`, `<key>_hi` per key: mean -/+ std, or the interval.
    """
    lines = []
    df = pd.DataFrame(records)
    for (row, protocol), group in df.groupby(["row", "protocol"], sort=False):
        line = {"row": row_label(row), "protocol": protocol, "seeds": len(group)}
        first = group.iloc[0]
        for k in KEYS:
            line[k] = float(group[k].mean())
            if len(group) > 1 or protocol == "sample-100":
                std = float(group[k].std(ddof=1)) if len(group) > 1 else float(first[f"{k}_std"])
                line[f"{k}_lo"], line[f"{k}_hi"] = line[k] - std, line[k] + std
            else:
                line[f"{k}_lo"], line[f"{k}_hi"] = first[f"{k}_ci"]
        std = line["mean_hi"] - line["mean"]
        if len(group) > 1:
            line["spread"] = f"± {std:.2f} (std over {len(group)} seeds)"
        elif protocol == "sample-100":
            line["spread"] = f"± {std:.2f} (std over sampling repeats)"
        else:
            lo, hi = first["mean_ci"]
            line["spread"] = f"[{lo:.2f}, {hi:.2f}] (95% bootstrap over queries)"
        lines.append(line)
    if published:
        for rec in published_records():
            lines.append({"row": rec["label"], "protocol": rec["protocol"], "seeds": np.nan,
                          **{k: rec[k] for k in KEYS}, "spread": rec["source"]})
    columns = ["row", "protocol", "seeds", *KEYS, "spread", *(f"{k}_{b}" for k in KEYS for b in ("lo", "hi"))]
    table = pd.DataFrame(lines, columns=columns).astype({k: float for k in KEYS})
    order = {p: i for i, p in enumerate(PROTOCOLS)}
    return table.sort_values("protocol", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary without the per-key spread columns (what results.md and the notebook show)."""
    return summary[[c for c in summary.columns if not c.endswith(("_lo", "_hi"))]]


def breakdown_table(breakdown: list[dict]) -> pd.DataFrame:
    """Entity breakdown records (row, type, status, n, metric keys) averaged over seeds."""
    df = pd.DataFrame(breakdown)
    if df.empty:
        return df
    cols = ["row", "type", "status"]
    table = df.groupby(cols, sort=False).agg({**{k: "mean" for k in KEYS}, "n": "first"}).reset_index()
    table["row"] = table["row"].map(row_label)
    return table[[*cols, "n", *KEYS]]


def to_markdown(table: pd.DataFrame, decimals: int = 2) -> str:
    """A GitHub Markdown table (no extra dependency), numbers rounded; missing cells left blank."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{decimals}f}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def results_markdown(profile: str, summary: pd.DataFrame, breakdown: pd.DataFrame, not_measured=None) -> str:
    """results.md: the summary table, the protocols left out and why (not_measured: protocol -> reason),
    and the entity breakdown when there is one."""
    parts = [f"# Retrieval results: profile `{profile}`", "",
             "Recall@K in percent (i2t = image->text, t2i = text->image); `mean` = average of the 6.",
             "Protocols (METHOD.md section 10): full = first view per product, all products; "
             "full-all-views = every image, a hit on any view; sample-100 = 1000 (or the profile's number of) "
             "queries against the positive + 100 same-subcategory negatives, 5 seeded repeats.",
             "Rows marked (published) are the papers' numbers, labelled with their protocol and source.", "",
             to_markdown(display_table(summary)), ""]
    for protocol, why in (not_measured or {}).items():
        parts += [f"**{protocol} not measured**: {why}.", ""]
    if not breakdown.empty:
        parts += ["## Breakdown by entity type (full protocol)", "",
                  "Queries grouped by the value of each entity type of their product: confounding-prone "
                  "values (entity artifact) versus the rest; products without a value are left out.", "",
                  to_markdown(breakdown), ""]
    return "\n".join(parts)
