"""Notebook 05's readings: the sentences printed under each figure, computed from its numbers only.

Each section of notebook 05 (eiclip_core.analysis.sections) reduces its measures (eiclip_core.analysis.measures) to a
small record of plain numbers, rounded (the `*_numbers` functions); the `read_*` functions turn a record
into sentences and use nothing else. Records and sentences are written to <reports_dir>/readings.json,
so a test can read the numbers back and rebuild every sentence from them. The tables a record is made
from carry field names and name the models as eiclip_core.protocols does; a record names them by their
display labels (eiclip_core.evaluation.results.row_label), as its sentences do.

A reading never claims an effect the numbers do not support. Numbers are compared as they are printed,
a difference within a stated tolerance reads as none (the tolerances below), and two claims that
rest on many small differences pass a test first: the retrieval disagreements a sign test, the turn of
prone against other dictionary values a rank test, the sweep's gain of EI-CLIP over CLIP-FT a paired
t-test over runs (p < SIGNIFICANCE; with fewer than MIN_PAIRS pairs it reads "not tested").
"""
import json
import math
from pathlib import Path

import pandas as pd

from eiclip_core.analysis.sweep_statistics import MIN_PAIRS
from eiclip_core.evaluation.results import row_label
from eiclip_core.io import write_text

SIGNIFICANCE = 0.05
COSINE_TOLERANCE = 0.01  # mean cosine to the nearest general English word, before vs after the EALM
PURITY_TOLERANCE = 0.01  # 10-NN purity, EI-CLIP vs CLIP-FT
GATE_MARGIN = 0.05  # a mean gate within 0.05 of 0.5 is no preference (the gates start near 0.5)
PROBE_TOLERANCE = 1.0  # points of the top-10 share moved toward the new value
FILE = "readings.json"


def compare(a: float, b: float, words=("more", "less", "as"), nd: int = 3, tol: float = 0.0) -> str:
    """words[0] if a > b, words[1] if a < b, as printed (rounded to nd decimals); words[2] when the
    printed difference is at most `tol` (no claim from noise)."""
    a, b = round(float(a), nd), round(float(b), nd)
    if round(abs(a - b), nd) <= tol:
        return words[2]
    return words[0] if a > b else words[1]


def rounded(value, nd: int = 6):
    """`value` with every float rounded to nd decimals and NaN as None, numpy scalars as Python ones:
    the record a reading is computed from is the record written to readings.json."""
    if isinstance(value, dict):
        return {str(k): rounded(v, nd) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, nd) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, nd) + 0.0  # + 0.0: no -0.0
    return value


# ------------------------------------------------------------------ records: measures -> numbers


def dictionary_numbers(shift: pd.DataFrame, neighbours: pd.DataFrame, frozen_cosine: float, moved_p,
                       collisions: pd.DataFrame) -> dict:
    """Record of section 1 from measures.dictionary_shift, measures.neighbour_table, the frozen-tower check,
    measures.moved_rank_test and measures.collision_table."""
    first_word = [neighbours[c].str.split(", ").str[0] for c in ("nearest_words_before", "nearest_words_after")]
    keys = {"kind": "kind", "collides_with": "group", "values": "values", "k": "k", "group_words": "group_words",
            "words": "words", "nearest_before": "before", "nearest_after": "after"}
    return rounded({
        "frozen_cosine": frozen_cosine,
        "groups": {label: {"values": int(r["n"]), "moved_degrees": r["moved_degrees"],
                           "cos_before": r["nearest_word_cos_before"], "cos_after": r["nearest_word_cos_after"]}
                   for label, r in shift.iterrows()},
        "moved_p": moved_p, "changed": int((first_word[0] != first_word[1]).sum()), "shown": len(neighbours),
        "collisions": collisions.rename(columns=keys)[list(keys.values())].to_dict("records")})


def purity_numbers(purity: pd.DataFrame, first: str, second: str, not_shown=()) -> dict:
    """Record of section 2 from measures.purity_table (rows types, columns the models `first` and `second`);
    not_shown: the types left out because no validation product has a value of them."""
    a, b = row_label(first), row_label(second)
    return rounded({"first": a, "second": b, "not_shown": list(not_shown),
                    "types": [{"type": t, a: purity.loc[t, first], b: purity.loc[t, second]} for t in purity.index]})


def gate_numbers(table: pd.DataFrame, by_category: pd.DataFrame) -> dict:
    """Record of section 3 from measures.gate_table and measures.gate_by_group."""
    spread = (by_category.max() - by_category.min()).sort_values(ascending=False, kind="stable")
    return rounded({"types": [{"type": t, "mean": r["mean"], "std": r["std"]} for t, r in table.iterrows()],
                    "category_range": [{"type": t, "range": v} for t, v in spread.items()]})


def attention_numbers(table: pd.DataFrame, figure_not_shown: "str | None" = None) -> dict:
    """Record of section 4 from measures.attention_table; figure_not_shown: the type whose example queries
    are not drawn because no validation product has a value of it."""
    return rounded({"figure_not_shown": figure_not_shown, "types": [
        {"type": t, "queries": int(r["queries"]), "top1_own": r["top1_is_own"],
         "prior_top1_own": r["prior_top1_is_own"], "weight_own": r["weight_on_own"],
         "prior_weight_own": r["prior_weight_on_own"], "departure": r["departure_from_prior"]}
        for t, r in table.iterrows()]})


def probe_numbers(summary: pd.DataFrame, first: str, second: str, types=()) -> dict:
    """Record of section 5 from the summary of eiclip_core.analysis.counterfactual_swap.run_probe over `types`
    for the models `first` and `second`."""
    return rounded({"first": row_label(first), "second": row_label(second), "types": list(types), "rows": [
        {"type": r["type"], "model": row_label(r["model"]), "queries": int(r["queries"]),
         "chance_pct": r["chance_pct"], "before_pct": r["top_k_before_pct"], "after_pct": r["top_k_after_pct"],
         "shift_points": r["shift_points"], "moved_pct": r["queries_moved_pct"]} for _, r in summary.iterrows()]})


def examples_numbers(first: str, second: str, queries: int, second_only: int, first_only: int,
                     sign_test_p: float) -> dict:
    """Record of section 6: of `queries`, how many only `second` ranks right (top-1) and how many only `first`
    (measures.disagreements), and measures.sign_test of the two counts."""
    return rounded({"first": row_label(first), "second": row_label(second), "queries": queries,
                    "sign_test_p": sign_test_p, "second_only": second_only, "first_only": first_only})


def sweep_numbers(profile: str, summary: "dict | None") -> dict:
    """Record of section 7 from eiclip_core.analysis.sweep_statistics's tables (summary None: no sweep): {"recall":
    recall_table, "harm": harm_table, "gain": gain_table, "prone": prone_gain_table}."""
    if summary is None:
        return {"profile": profile, "knobs": [], "pairs": 0, "rows": [], "harm": [], "gains": [], "prone": []}
    gains = summary["gain"]
    return rounded({
        "profile": profile, "knobs": gains["confounding"].tolist(), "pairs": int(gains["n"].min()),
        "rows": [{"confounding": r["confounding"], "row": row_label(r["row"]), "mean": r["mean_recall"],
                  "std": r["std"], "n": int(r["n"])} for _, r in summary["recall"].iterrows()],
        "harm": [{"row": row_label(r["row"]), "low": r["low"], "high": r["high"], "harm": r["harm"], "std": r["std"],
                  "n": int(r["n"]), "p": r["p"]} for _, r in summary["harm"].iterrows()],
        "gains": [{"confounding": r["confounding"], "gain": r["gain"], "std": r["std"], "n": int(r["n"]),
                   "wins": int(r["method_wins"]), "losses": int(r["baseline_wins"]), "p": r["p"]}
                  for _, r in gains.iterrows()],
        "prone": [{"confounding": r["confounding"], "type": r["type"], "status": r["status"], "gain": r["gain"],
                   "queries": r["queries"]} for _, r in summary["prone"].iterrows()]})


# ------------------------------------------------------------------ readings: numbers -> sentences


def read_dictionaries(n: dict) -> str:
    """n: frozen_cosine, groups {"prone" / "not prone": {values, moved_degrees, cos_before, cos_after}},
    moved_p (rank test of the turns, None without both groups), changed, shown (neighbour table),
    collisions [{kind, group, values, k, group_words, words, before, after}] (one line each)."""
    lines = [f"check: the frozen text tower reproduces D_t (mean cosine {n['frozen_cosine']:.3f})."]
    groups = n["groups"]
    if "prone" in groups:
        p = groups["prone"]
        closer = compare(p["cos_after"], p["cos_before"], ("closer to", "further from", "as close to"),
                         tol=COSINE_TOLERANCE)
        lines.append(f"prone values: E_t turned {p['moved_degrees']:.2f} degrees away from D_t; their nearest general "
                     f"English word has cosine {p['cos_before']:.3f} before and {p['cos_after']:.3f} after ({closer} "
                     f"everyday meaning; differences of {COSINE_TOLERANCE:g} or less read as equal).")
    if n["moved_p"] is not None:
        a, b = groups["prone"]["moved_degrees"], groups["not prone"]["moved_degrees"]
        how = (compare(a, b, ("more than", "less than", "as much as"), nd=2) if n["moved_p"] < SIGNIFICANCE
               else "about as much as")
        lines.append(f"the EALM moved prone values {how} the others ({a:.2f} vs {b:.2f} degrees; rank test "
                     f"p = {n['moved_p']:.2f}).")
    lines.append(f"nearest general word changed for {n['changed']} of the {n['shown']} values in the table.")
    for c in n["collisions"]:
        lines.append(f"{c['kind']}: {c['before']} of {c['values']} sit nearest the {c['group']} before, "
                     f"{c['after']} of {c['values']} after (most of their {c['k']} nearest general words; the "
                     f"{c['group']} are {c['group_words']} of the {c['words']}).")
    return "\n".join(lines)


def read_text_features(n: dict) -> str:
    """n: first, second (model names), types: [{type, <first>: purity, <second>: purity}] (None: too
    few labelled texts), not_shown: types no validation product has a value of (one line each, first)."""
    first, second = n["first"], n["second"]
    lines = [f"{t}: not shown, no validation product of this catalog has a {t} value."
             for t in n.get("not_shown", [])]
    for row in n["types"]:
        t, a, b = row["type"], row[first], row[second]
        if a is None or b is None:
            lines.append(f"{t}: too few labelled texts to measure the 10-NN purity.")
            continue
        how = compare(b, a, ("more", "less", "about as"), tol=PURITY_TOLERANCE)
        lines.append(f"{t}: 10-NN purity {a:.3f} ({first}) vs {b:.3f} ({second}): {second} groups texts of the same "
                     f"{t} {how} tightly (differences of {PURITY_TOLERANCE:g} or less read as equal).")
    return "\n".join(lines)


def read_gates(n: dict) -> str:
    """n: types [{type, mean, std}] highest mean first, category_range [{type, range}] widest first."""
    types, widest = n["types"], n["category_range"][0]
    chosen = [r["type"] for r in types if compare(r["mean"], 0.5, tol=GATE_MARGIN) == "more"]
    return (f"highest mean gate: {types[0]['type']} ({types[0]['mean']:.3f}); lowest: {types[-1]['type']} "
            f"({types[-1]['mean']:.3f}). Types gated above 0.5 by more than {GATE_MARGIN:g} on average (treated as "
            f"confounders): {', '.join(chosen) if chosen else 'none'}. Across categories the mean gate varies most "
            f"for {widest['type']} (range {widest['range']:.3f}).")


def read_attention(n: dict) -> str:
    """n: types [{type, queries, top1_own, prior_top1_own, weight_own, prior_weight_own, departure}],
    figure_not_shown (a type without example queries, or None)."""
    missing = n.get("figure_not_shown")
    lines = [f"figure not shown: no validation product of this catalog has a {missing} value."] if missing else []
    lines += [f"{r['type']}: the attention's top value is the query's own value for {100 * r['top1_own']:.1f} % of "
              f"{r['queries']} queries (prior alone: {100 * r['prior_top1_own']:.1f} %); mean weight on the own "
              f"value {r['weight_own']:.3f} vs prior {r['prior_weight_own']:.3f}; departure from the prior "
              f"{r['departure']:.3f} (total variation, 0 = the prior itself)." for r in n["types"]]
    return "\n".join(lines)


def read_probe(n: dict) -> str:
    """n: first, second (model names), types (probed), rows [{type, model, queries, shift_points, moved_pct,
    ...}]; no rows at all: the section is not shown, and the sentence says why."""
    first, second = n["first"], n["second"]
    lines = []
    for t in dict.fromkeys(r["type"] for r in n["rows"]):
        s = {r["model"]: r for r in n["rows"] if r["type"] == t}
        if first not in s or second not in s:
            continue
        a, b = (round(s[m]["shift_points"], 1) + 0.0 for m in (first, second))  # as printed, no -0.0
        how = compare(b, a, ("more than", "less than", "about as much as"), nd=1, tol=PROBE_TOLERANCE)
        lines.append(f"{t}: swapping the value moves {b:.1f} % of {second}'s top-10 toward the new value, {how} "
                     f"{first} ({a:.1f} %); queries moved: {s[second]['moved_pct']:.0f} % vs "
                     f"{s[first]['moved_pct']:.0f} % ({s[second]['queries']} queries).")
    if lines or n["rows"]:
        return "\n".join(lines) if lines else "no type had enough values to probe"
    what = f"a {' or '.join(n['types'])} value" if n.get("types") else "an entity value"
    return (f"not shown: no validation text mentions {what} that could be swapped for another value of its type "
            "(a catalog that maps none, or whose texts never name them).")


def read_examples(n: dict) -> str:
    """n: first, second (model names), queries, second_only / first_only (queries only that model ranks
    first), sign_test_p."""
    first, second, a, b, p = n["first"], n["second"], n["second_only"], n["first_only"], n["sign_test_p"]
    verdict = ("neither model wins more of them beyond chance" if p >= SIGNIFICANCE else
               f"{second if a > b else first} wins more of them")
    return (f"of {n['queries']} text queries, {second} ranks the right image first where {first} does not for {a}, "
            f"and {first} where {second} does not for {b}: {verdict} (sign test p = {p:.2f}).")


def _spread(mean, std, nd: int = 2, sign: str = "") -> str:
    """"m ± s" as printed; the spread left out when there is none (one run)."""
    return f"{mean:{sign}.{nd}f}" + ("" if std is None else f" ± {std:.{nd}f}")


def _gain_verdict(g: dict) -> str:
    """One knob's paired gain: beyond the spread only when the paired test says p < SIGNIFICANCE."""
    if g["p"] is None:
        return "not tested" + (f" (fewer than {MIN_PAIRS} pairs)" if g["n"] < MIN_PAIRS
                               else " (every pair differs by the same)")
    if g["p"] < SIGNIFICANCE:
        shown = f"= {g['p']:.3f}" if g["p"] >= 0.001 else "< 0.001"
        return f"beyond the spread, EI-CLIP {'ahead' if g['gain'] > 0 else 'behind'} (paired t-test p {shown})"
    return f"within the spread (paired t-test p = {g['p']:.2f})"


def _prone_line(rows: list) -> str:
    """Per type, EI-CLIP's gain on queries with a confounding-prone value against the rest (as printed)."""
    by_type = {}
    for r in rows:
        by_type.setdefault(r["type"], {})[r["status"]] = r["gain"]
    both = {t: g for t, g in by_type.items() if {"prone", "not prone"} <= set(g) and None not in g.values()}
    if not both:
        return "no entity type has both prone and other values here"
    more = [t for t, g in both.items() if round(g["prone"], 2) > round(g["not prone"], 2)]
    shown = ", ".join(f"{t} {g['prone']:+.2f} vs {g['not prone']:+.2f}" for t, g in both.items())
    return (f"gain on prone values above the rest (as printed; no test) for {len(more)} of {len(both)} types "
            f"({shown})")


def _knob_line(x: float, rows: list, gain: dict, prone: list, low: float) -> str:
    """One knob: the three rows' mean recall with spread, the paired gain, and the prone breakdown."""
    label = f"knob {x:g}" + (" (control)" if x == low == 0 else "")
    recall = ", ".join(f"{r['row']} {_spread(r['mean'], r['std'])}" for r in rows if r["confounding"] == x)
    g = gain
    return (f"{label}: {recall}; EI-CLIP - CLIP-FT {_spread(g['gain'], g['std'], sign='+')} points over {g['n']} "
            f"pair(s), EI-CLIP ahead in {g['wins']} of {g['n']}: {_gain_verdict(g)}; "
            f"{_prone_line([p for p in prone if p['confounding'] == x])}.")


def _sweep_verdict(gains: list) -> str:
    """The answer to "does EI-CLIP beat CLIP-FT where the confounder is, and not where it is not?"."""
    low, high = gains[0], gains[-1]
    wins = [g["p"] is not None and g["p"] < SIGNIFICANCE and g["gain"] > 0 for g in (low, high)]
    if wins[1] and not wins[0]:
        return (f"EI-CLIP beats CLIP-FT beyond the spread at knob {high['confounding']:g} and not at knob "
                f"{low['confounding']:g}, as its premise predicts.")
    if wins[1]:
        return (f"EI-CLIP beats CLIP-FT beyond the spread at knob {high['confounding']:g} and also at knob "
                f"{low['confounding']:g}: its gain is not specific to the confounder.")
    return (f"EI-CLIP does NOT beat CLIP-FT beyond the spread at knob {high['confounding']:g}: these runs do not "
            "support EI-CLIP's premise, and that is the finding.")


def read_sweep(n: dict) -> str:
    """n: profile, knobs, pairs (fewest (data seed, training seed) pairs at a knob), rows (mean recall per
    knob and row with std and n), harm (per row, lowest knob - highest: points lost to the confounder),
    gains (per knob: gain, std, n, wins, losses, p), prone (per knob, type and status: gain). One line per
    knob, the harm, the verdict."""
    if not n["knobs"]:
        return f"profile {n['profile']}: no confounding sweep (the real data has no knob)."
    low = n["knobs"][0]
    lines = []
    if n["pairs"] < MIN_PAIRS:
        pairs = "one pair" if n["pairs"] == 1 else f"{n['pairs']} pairs"
        size = "one-seed" if n["pairs"] == 1 else "few-seed"
        lines.append(f"profile {n['profile']} is the small, {size} version of `science`: {pairs} of runs (data "
                     f"seed, training seed) per knob value, so no paired test is possible with {pairs}; no gain "
                     "below is evidence either way.")
    lines += [_knob_line(g["confounding"], n["rows"], g, n["prone"], low) for g in n["gains"]]
    if n["harm"] and n["harm"][0]["high"] > n["harm"][0]["low"]:
        h0 = n["harm"][0]
        harm = ", ".join(f"{h['row']} {_spread(h['harm'], h['std'], sign='+')}" for h in n["harm"])
        lines.append(f"confounding harm (knob {h0['low']:g} - knob {h0['high']:g}: recall points lost to the "
                     f"confounder): {harm}.")
    if n["pairs"] >= MIN_PAIRS and len(n["gains"]) > 1:
        lines.append(_sweep_verdict(n["gains"]))
    return "\n".join(lines)


READERS = {"dictionaries": read_dictionaries, "text_features": read_text_features, "gates": read_gates,
           "attention": read_attention, "probe": read_probe, "examples": read_examples, "sweep": read_sweep}


def write_readings(reports_dir, sections: dict) -> Path:
    """<reports_dir>/readings.json: {section: {"numbers": record, "reading": sentences}} of notebook 05's
    sections (each a dict with "numbers" and "reading"), keys sorted, written atomically."""
    record = {name: {"numbers": s["numbers"], "reading": s["reading"]} for name, s in sections.items()}
    path = Path(reports_dir) / FILE
    write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path
