"""The confounding sweep's statistics (its question: does EI-CLIP beat CLIP-FT where the confounder is,
and not where it is not?), from the tables of eiclip_core.analysis.sweep.run_sweep.

    recall_table    per knob and row: mean recall, its spread (std over every run) and n runs
    harm_table      per row: the confounding harm, lowest knob minus highest (knob 0 - knob 1), paired
                    over runs of the same data seed and training seed (the same draw with the knob moved)
    gain_table      per knob: EI-CLIP - CLIP-FT paired over (data seed, training seed), its spread, the
                    runs each model wins, and a paired t-test (scipy.stats.ttest_rel) from MIN_PAIRS pairs
    prone_gain_table  per knob, entity type and prone / not-prone status: the same gain on those queries

A run's number is its full-protocol mean recall (the mean of the six recalls, in points). No number of
these tables is tuned on: they are computed once from the runs the profile fixes in advance. The tables
name rows as eiclip_core.protocols does and carry field names; notebook 05 labels both where it shows
them (eiclip_core.analysis.sections.shown).
"""
import numpy as np
import pandas as pd

from eiclip_core.protocols import BASELINE, METHOD, ZERO_SHOT

MIN_PAIRS = 3  # fewer pairs: no paired test ("not tested")
PAIR = ["data seed", "seed"]  # what makes two runs a pair: the same draw of data, the same training seed


def paired(first, second) -> dict:
    """second - first over matched pairs: mean, std (ddof 1; NaN for one pair), n, how many pairs each
    side wins, and the two-sided paired t-test p (None below MIN_PAIRS pairs, or when every difference
    is the same, so there is no spread to test against)."""
    from scipy.stats import ttest_rel

    first, second = np.asarray(first, float), np.asarray(second, float)
    d = second - first
    n = len(d)
    p = None
    if n >= MIN_PAIRS and np.ptp(d) > 0:
        p = float(ttest_rel(second, first).pvalue)
    return {"mean": float(d.mean()) if n else np.nan, "std": float(d.std(ddof=1)) if n > 1 else np.nan, "n": n,
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "p": p}


def _pairs(table: pd.DataFrame, value: str = "mean") -> pd.DataFrame:
    """Rows of `table` (one model's runs) indexed by PAIR; zero-shot runs (seed NaN) pair with seed -1."""
    return table.assign(seed=table["seed"].fillna(-1)).set_index(PAIR)[value]


def _row_order(recalls: pd.DataFrame) -> list:
    """The rows present, zero-shot, CLIP-FT, EI-CLIP first, then any other in order of appearance."""
    return [r for r in dict.fromkeys([ZERO_SHOT, BASELINE, METHOD, *recalls["row"]]) if r in set(recalls["row"])]


def recall_table(recalls: pd.DataFrame) -> pd.DataFrame:
    """Per knob and row (in _row_order): mean_recall, its std over runs, n runs."""
    order = _row_order(recalls)
    table = (recalls.groupby(["confounding", "row"])["mean"].agg(["mean", "std", "count"]).reset_index()
             .rename(columns={"mean": "mean_recall", "count": "n"}))
    return table.sort_values(["confounding", "row"], key=lambda s: s.map(order.index) if s.name == "row" else s,
                             kind="stable").reset_index(drop=True)


def harm_table(recalls: pd.DataFrame) -> pd.DataFrame:
    """Per row: the confounding harm, mean recall at the lowest knob (the control) minus the highest, paired
    over (data seed, training seed): points the confounder costs, positive = harm, as notebook 01's."""
    low, high = recalls["confounding"].min(), recalls["confounding"].max()
    rows = []
    for row in _row_order(recalls):
        runs = recalls[recalls["row"] == row]
        both = pd.concat([_pairs(runs[runs["confounding"] == low]), _pairs(runs[runs["confounding"] == high])],
                         axis=1, join="inner")
        s = paired(both.iloc[:, 1], both.iloc[:, 0])  # low - high
        rows.append({"row": row, "low": low, "high": high, "harm": s["mean"], "std": s["std"],
                     "n": s["n"], "p": s["p"]})
    return pd.DataFrame(rows)


def _gain(runs: pd.DataFrame, value: str = "mean") -> dict:
    """EI-CLIP - CLIP-FT (paired) over the runs of one knob (and one query group)."""
    both = pd.concat([_pairs(runs[runs["row"] == BASELINE], value), _pairs(runs[runs["row"] == METHOD], value)],
                     axis=1, join="inner")
    return paired(both.iloc[:, 0], both.iloc[:, 1])


def gain_table(recalls: pd.DataFrame) -> pd.DataFrame:
    """Per knob: EI-CLIP's paired gain over CLIP-FT (mean, std, n pairs, the pairs each wins: method_wins
    and baseline_wins, t-test p)."""
    rows = []
    for x, runs in recalls.groupby("confounding"):
        s = _gain(runs)
        rows.append({"confounding": x, "gain": s["mean"], "std": s["std"], "n": s["n"],
                     "method_wins": s["wins"], "baseline_wins": s["losses"], "p": s["p"]})
    return pd.DataFrame(rows)


def prone_gain_table(breakdown: pd.DataFrame) -> pd.DataFrame:
    """Per knob, entity type and status (prone / not prone, scoring.entity_breakdown): EI-CLIP's paired
    gain over CLIP-FT on those queries (mean over pairs, its std) and their number (mean over runs)."""
    rows = []
    for (x, t, status), runs in breakdown.groupby(["confounding", "type", "status"], sort=False):
        s = _gain(runs)
        rows.append({"confounding": x, "type": t, "status": status, "queries": float(runs["n"].mean()),
                     "gain": s["mean"], "std": s["std"], "n": s["n"]})
    return pd.DataFrame(rows, columns=["confounding", "type", "status", "queries", "gain", "std", "n"])
