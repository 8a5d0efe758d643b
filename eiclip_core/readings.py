"""Notebook 05's readings: the sentences printed under each figure, computed from its numbers only.

Each section of notebook 05 (eiclip_core.confounders) reduces its measures (eiclip_core.analysis) to a
small record of plain numbers, rounded (the `*_numbers` functions); the `read_*` functions turn a record
into sentences and use nothing else. Records and sentences are written to <reports_dir>/readings.json,
so a test can read the numbers back and rebuild every sentence from them.

A reading never claims an effect the numbers do not support. Numbers are compared as they are printed,
a difference within a stated tolerance reads as none (the tolerances below), and two claims that
rest on many small differences pass a test first: the retrieval disagreements a sign test, the turn of
prone against other dictionary values a rank test (p < SIGNIFICANCE).
"""
import json
import math
from pathlib import Path

import pandas as pd

from eiclip_core.io import write_text

SIGNIFICANCE = 0.05
COSINE_TOLERANCE = 0.01  # mean cosine to the nearest general English word, before vs after the EALM
PURITY_TOLERANCE = 0.01  # 10-NN purity, EI-CLIP vs CLIP-FT
GATE_MARGIN = 0.05  # a mean gate within 0.05 of 0.5 is no preference (the gates start near 0.5)
PROBE_TOLERANCE = 1.0  # points of the top-10 share moved toward the new value
SWEEP_TOLERANCE = 1.0  # points of mean recall that the fitted gain rises over the knob (one seed, small runs)
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
    """Record of section 1 from analysis.dictionary_shift, analysis.neighbour_table, the frozen-tower check,
    analysis.moved_rank_test and analysis.collision_table."""
    first_word = [neighbours[c].str.split(", ").str[0] for c in ("before (D_t)", "after (E_t)")]
    keys = {"kind": "kind", "collides with": "group", "values": "values", "k": "k", "group words": "group_words",
            "words": "words", "nearest before": "before", "nearest after": "after"}
    return rounded({
        "frozen_cosine": frozen_cosine,
        "groups": {label: {"values": int(r["n"]), "moved_degrees": r["moved (degrees)"],
                           "cos_before": r["nearest word cos before"], "cos_after": r["nearest word cos after"]}
                   for label, r in shift.iterrows()},
        "moved_p": moved_p, "changed": int((first_word[0] != first_word[1]).sum()), "shown": len(neighbours),
        "collisions": collisions.rename(columns=keys)[list(keys.values())].to_dict("records")})


def purity_numbers(purity: pd.DataFrame, first: str, second: str, not_shown=()) -> dict:
    """Record of section 2 from analysis.purity_table (rows types, columns models); not_shown: the types
    left out because no validation product has a value of them."""
    return rounded({"first": first, "second": second, "not_shown": list(not_shown),
                    "types": [{"type": t, first: purity.loc[t, first], second: purity.loc[t, second]}
                              for t in purity.index]})


def gate_numbers(table: pd.DataFrame, by_category: pd.DataFrame) -> dict:
    """Record of section 3 from analysis.gate_table and analysis.gate_by_group."""
    spread = (by_category.max() - by_category.min()).sort_values(ascending=False, kind="stable")
    return rounded({"types": [{"type": t, "mean": r["mean"], "std": r["std"]} for t, r in table.iterrows()],
                    "category_range": [{"type": t, "range": v} for t, v in spread.items()]})


def attention_numbers(table: pd.DataFrame, figure_not_shown: "str | None" = None) -> dict:
    """Record of section 4 from analysis.attention_table; figure_not_shown: the type whose example queries
    are not drawn because no validation product has a value of it."""
    return rounded({"figure_not_shown": figure_not_shown, "types": [
        {"type": t, "queries": int(r["queries"]), "top1_own": r["top-1 is own value"],
         "prior_top1_own": r["prior top-1 is own value"], "weight_own": r["weight on own value"],
         "prior_weight_own": r["prior weight on own value"], "departure": r["departure from prior"]}
        for t, r in table.iterrows()]})


def probe_numbers(summary: pd.DataFrame, first: str, second: str, types=()) -> dict:
    """Record of section 5 from the summary of eiclip_core.probe.run_probe over `types`."""
    return rounded({"first": first, "second": second, "types": list(types), "rows": [
        {"type": r["type"], "model": r["model"], "queries": int(r["queries"]), "chance_pct": r["chance %"],
         "before_pct": r["top-10 before %"], "after_pct": r["top-10 after %"], "shift_points": r["shift (points)"],
         "moved_pct": r["queries moved %"]} for _, r in summary.iterrows()]})


def examples_numbers(counts: dict, first: str, second: str, queries: int, sign_test_p: float) -> dict:
    """Record of section 6 from the counts of analysis.disagreements and analysis.sign_test."""
    return rounded({"first": first, "second": second, "queries": queries, "sign_test_p": sign_test_p,
                    "second_only": counts[f"{second} right, {first} wrong"],
                    "first_only": counts[f"{first} right, {second} wrong"]})


def sweep_numbers(profile: str, table, trend: dict) -> dict:
    """Record of section 7 from eiclip_core.sweep.run_sweep and sweep.trend (table None: no sweep)."""
    if table is None:
        return {"profile": profile, "points": [], "slope": None, "monotonic": None}
    columns = ["confounding", *(c for c in table.columns if c.startswith("mean R ")), "gain"]
    return rounded({"profile": profile, "slope": trend["slope"], "monotonic": trend["monotonic"],
                    "points": [{c: r[c] for c in columns} for _, r in table.iterrows()]})


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


def read_sweep(n: dict) -> str:
    """n: profile, points [{confounding, gain, ...}] by knob value (empty: no sweep), slope (points per
    unit of knob), monotonic (the gain rises at every step, as printed)."""
    points = n["points"]
    if not points:
        return f"profile {n['profile']}: no confounding sweep (the real data has no knob)."
    lo, hi = points[0], points[-1]
    if n["slope"] is None:
        return f"EI-CLIP - CLIP-FT: {lo['gain']:+.2f} points at knob {lo['confounding']:g}; one knob value, no trend."
    rise = n["slope"] * (hi["confounding"] - lo["confounding"])  # of the fitted line over the knob's range
    if compare(rise, 0.0, nd=2, tol=SWEEP_TOLERANCE) == "more":
        how = "grows at every step" if n["monotonic"] else "grows overall but not at every step"
        verdict = f"the gain {how} with confounding, as EI-CLIP's premise predicts"
    else:
        verdict = (f"the gain does NOT grow with confounding (a fitted rise of {SWEEP_TOLERANCE:g} point or less is "
                   "within noise): these runs do not support EI-CLIP's premise")
    return (f"EI-CLIP - CLIP-FT: {lo['gain']:+.2f} points at knob {lo['confounding']:g}, {hi['gain']:+.2f} at "
            f"{hi['confounding']:g} (slope {n['slope']:+.2f} points per unit of knob): {verdict}.")


READERS = {"dictionaries": read_dictionaries, "text_features": read_text_features, "gates": read_gates,
           "attention": read_attention, "probe": read_probe, "examples": read_examples, "sweep": read_sweep}


def write_readings(reports_dir, sections: dict) -> Path:
    """<reports_dir>/readings.json: {section: {"numbers": record, "reading": sentences}} of notebook 05's
    sections (each a dict with "numbers" and "reading"), keys sorted, written atomically."""
    record = {name: {"numbers": s["numbers"], "reading": s["reading"]} for name, s in sections.items()}
    path = Path(reports_dir) / FILE
    write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path
