"""Notebook 05's readings (eiclip_core.analysis.readings): sentences computed from numbers, never beyond them.

(a) Unit tests on small fabricated measures: each reading says what its numbers say, and claims no
    difference within its tolerance (or, for the retrieval disagreements and the dictionary turns,
    without its test passing).
(b) `check_readings_file` checks a readings.json written by notebook 05 (e.g. a smoke run's):
    every sentence is rebuilt from the recorded numbers and the numbers are consistent with each other;
    `number_differences` compares two such files number by number with a tolerance.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eiclip_core.analysis import readings
from eiclip_core.analysis.measures import sign_test
from eiclip_core.protocols import BASELINE, METHOD

FIRST, SECOND = BASELINE, METHOD  # the models the tables name; the records and sentences show their labels
FIRST_LABEL, SECOND_LABEL = "CLIP-FT", "EI-CLIP"
unit = st.floats(0, 1, allow_nan=False)


# ------------------------------------------------------------------ fabricated measures


def shift_table(prone=(0.19, 0.585, 0.585), other=(0.17, 0.6, 0.6)) -> pd.DataFrame:
    """measures.dictionary_shift's table: (moved degrees, cos before, cos after) per group."""
    cols = ["n", "moved_degrees", "nearest_word_cos_before", "nearest_word_cos_after"]
    return pd.DataFrame([[12, *prone], [30, *other]], index=pd.Index(["prone", "not prone"], name="values"),
                        columns=cols)


def neighbour_table(before=("fuel, car", "bird, sky"), after=("fuel, road", "sky, bird")) -> pd.DataFrame:
    return pd.DataFrame({"nearest_words_before": before, "nearest_words_after": after})


def collision_table(rows=(("colour-word brands", "colour words", 6, 13, 5, 4),
                          ("fit words", "position words", 4, 13, 4, 4))):
    """measures.collision_table: (kind, collides_with, values, group_words, nearest_before, nearest_after)."""
    columns = ["kind", "collides_with", "values", "k", "group_words", "words", "nearest_before", "nearest_after"]
    return pd.DataFrame([(kind, group, n, 5, g, 81, b, a) for kind, group, n, g, b, a in rows], columns=columns)


def probe_summary(shifts: dict) -> pd.DataFrame:
    """run_probe's summary for one type: shift_points per model."""
    return pd.DataFrame([{"type": "brand", "model": m, "queries": 50, "chance_pct": 10.0, "top_k_before_pct": 5.0,
                          "top_k_after_pct": 5.0 + s, "shift_points": s, "queries_moved_pct": 20.0}
                         for m, s in shifts.items()])


def sweep_summary(gains: dict, base: float = 20.0) -> dict:
    """eiclip_core.analysis.sweep_statistics's tables from hand-made runs: per knob, EI-CLIP = CLIP-FT + gains[knob][i] on
    pair i = (data seed i // 3, training seed i % 3), CLIP-FT falling with the knob; no entity breakdown rows
    but a prone / not-prone pair of brand queries whose gains differ by one point."""
    from eiclip_core.analysis import sweep_statistics as summary

    runs, breakdown = [], []
    for x, values in gains.items():
        for i, g in enumerate(values):
            where = {"confounding": x, "data seed": i // 3, "seed": i % 3}
            ft = base - 4 * x + i
            runs += [{**where, "row": "clip-ft", "mean": ft}, {**where, "row": "ei-clip", "mean": ft + g}]
            for status, extra in (("prone", 1.0), ("not prone", 0.0)):
                breakdown += [{**where, "row": "clip-ft", "type": "brand", "status": status, "n": 40, "mean": ft},
                              {**where, "row": "ei-clip", "type": "brand", "status": status, "n": 40,
                               "mean": ft + g + extra}]
        runs += [{"confounding": x, "data seed": d, "seed": np.nan, "row": "zero-shot", "mean": 9.0 - 3 * x + d}
                 for d in sorted({i // 3 for i in range(len(values))})]
    runs, breakdown = pd.DataFrame(runs), pd.DataFrame(breakdown)
    return {"recall": summary.recall_table(runs), "harm": summary.harm_table(runs), "gain": summary.gain_table(runs),
            "prone": summary.prone_gain_table(breakdown)}


def sweep_reading(gains: dict) -> str:
    return readings.read_sweep(readings.sweep_numbers("science", sweep_summary(gains)))


def gate_reading(means) -> str:
    types = [f"t{i}" for i in range(len(means))]
    table = pd.DataFrame({"mean": means, "std": 0.01}, index=types).sort_values("mean", ascending=False, kind="stable")
    by_category = pd.DataFrame([means, means], index=["bags", "tops"], columns=types)
    return readings.read_gates(readings.gate_numbers(table, by_category))


# ------------------------------------------------------------------ (a) the readings say what the numbers say


def test_compare_reads_numbers_as_printed_and_within_tolerance():
    assert readings.compare(0.040, 0.039, ("more", "less", "about as"), tol=0.01) == "about as"
    assert readings.compare(0.060, 0.039, ("more", "less", "about as"), tol=0.01) == "more"
    assert readings.compare(0.5, 0.5) == "as" and readings.compare(0.4, 0.5) == "less"
    assert readings.compare(0.5004, 0.5) == "as"  # equal as printed with 3 decimals
    assert readings.compare(0.112, 0.102, tol=0.01) == "as"  # a printed difference of exactly the tolerance
    assert readings.compare(0.113, 0.102, tol=0.01) == "more"


def test_rounded_records_are_plain_json():
    record = readings.rounded({"a": np.float32(0.1234567891), "b": [np.int64(3), float("nan"), -1e-9], "c": True})
    assert record == {"a": 0.123457, "b": [3, None, 0.0], "c": True}
    assert type(record["b"][0]) is int and str(record["b"][2]) == "0.0"  # no -0.0
    json.dumps(record, allow_nan=False)


def test_dictionary_reading_needs_the_rank_test_and_the_tolerance():
    unsure = readings.read_dictionaries(readings.dictionary_numbers(shift_table(), neighbour_table(), 0.9996, 0.41,
                                                                    collision_table()))
    assert "mean cosine 1.000" in unsure
    assert "E_t turned 0.19 degrees away from D_t" in unsure and "(as close to everyday meaning" in unsure
    assert "moved prone values about as much as the others (0.19 vs 0.17 degrees; rank test p = 0.41)" in unsure
    assert "changed for 1 of the 2 values" in unsure  # "bird" -> "sky"; "fuel" stays first
    assert unsure.split("\n")[-2:] == [
        "colour-word brands: 5 of 6 sit nearest the colour words before, 4 of 6 after (most of their 5 nearest "
        "general words; the colour words are 13 of the 81).",
        "fit words: 4 of 4 sit nearest the position words before, 4 of 4 after (most of their 5 nearest general "
        "words; the position words are 13 of the 81)."]
    sure = readings.read_dictionaries(readings.dictionary_numbers(
        shift_table(prone=(3.2, 0.6, 0.54)), neighbour_table(), 1.0, 0.001, collision_table()))
    assert "moved prone values more than the others (3.20 vs 0.17" in sure and "(further from everyday" in sure
    closer = readings.read_dictionaries(readings.dictionary_numbers(
        shift_table(prone=(0.1, 0.5, 0.52)), neighbour_table(), 1.0, 0.001, collision_table()))
    assert "(closer to everyday" in closer and "less than the others" in closer
    prone_only = readings.dictionary_numbers(shift_table().iloc[:1], neighbour_table(), 1.0, None,
                                             collision_table(()))
    alone = readings.read_dictionaries(prone_only)
    assert "prone values: E_t turned" in alone and "the others" not in alone
    assert prone_only["collisions"] == [] and "sit nearest" not in alone  # no collision kind in the data


def test_purity_reading_within_tolerance_and_missing():
    purity = pd.DataFrame({FIRST: [0.102, 0.336, 0.20, float("nan")], SECOND: [0.102, 0.346, 0.25, 0.3]},
                          index=["brand", "category", "fit", "season"])
    lines = readings.read_text_features(readings.purity_numbers(purity, FIRST, SECOND)).split("\n")
    assert "groups texts of the same brand about as tightly" in lines[0]
    assert "0.336 (CLIP-FT) vs 0.346 (EI-CLIP)" in lines[1] and "about as tightly" in lines[1]  # 0.01: equal
    assert "same fit more tightly" in lines[2]
    assert lines[3] == "season: too few labelled texts to measure the 10-NN purity."


def test_gate_reading_needs_a_margin_over_one_half():
    near = gate_reading([0.525, 0.503, 0.493])
    assert "highest mean gate: t0 (0.525); lowest: t2 (0.493)" in near and "(treated as confounders): none" in near
    assert "(treated as confounders): t0." in gate_reading([0.70, 0.55, 0.45])  # 0.55: exactly the margin, not more
    assert "varies most for t0 (range 0.000)" in gate_reading([0.70, 0.55, 0.45])


def test_attention_reading_reports_the_departure_from_the_prior():
    table = pd.DataFrame({"queries": [128], "top1_is_own": [0.164], "prior_top1_is_own": [0.164],
                          "weight_on_own": [0.1], "prior_weight_on_own": [0.1], "departure_from_prior": [0.0004]},
                         index=["brand"])
    line = readings.read_attention(readings.attention_numbers(table))
    assert line.startswith("brand: the attention's top value is the query's own value for 16.4 % of 128 queries")
    assert "(prior alone: 16.4 %)" in line and "departure from the prior 0.000" in line


def test_probe_reading_needs_more_than_a_point():
    def verdict(first, second):
        return readings.read_probe(readings.probe_numbers(probe_summary({FIRST: first, SECOND: second}), FIRST, SECOND))

    assert ("moves 0.2 % of EI-CLIP's top-10 toward the new value, about as much as CLIP-FT (-0.2 %)"
            in verdict(-0.2, 0.2))
    assert "more than CLIP-FT (-1.4 %)" in verdict(-1.4, 0.3)
    assert "about as much as CLIP-FT (0.0 %)" in verdict(0.0, 1.0)  # exactly the tolerance
    assert "less than CLIP-FT (3.0 %)" in verdict(3.0, 1.9)
    assert "(-0.0" not in verdict(-0.04, 0.0)
    only_one = readings.probe_numbers(probe_summary({FIRST: 1.0}), FIRST, SECOND)
    assert readings.read_probe(only_one) == "no type had enough values to probe"


def test_examples_reading_needs_the_sign_test():
    def reading(a, b):
        return readings.read_examples(readings.examples_numbers(FIRST, SECOND, 128, a, b, sign_test(a, b)))

    assert reading(0, 0).endswith("neither model wins more of them beyond chance (sign test p = 1.00).")
    assert "for 6, and CLIP-FT where EI-CLIP does not for 4: neither model wins" in reading(6, 4)
    assert "EI-CLIP wins more of them (sign test p = 0.00)" in reading(10, 0)
    assert "CLIP-FT wins more of them" in reading(1, 12)


def test_sweep_reading_calls_beyond_the_spread_only_when_the_paired_test_says_so():
    control, noise = [0.1, -0.2, 0.05, 0.1, -0.1, 0.0], [1.0, -1.2, 0.4, -0.6, 0.9, -0.3]
    clear = [2.0, 2.2, 1.8, 2.1, 1.9, 2.4]
    line = sweep_reading({0.0: control, 1.0: clear})
    assert "EI-CLIP beats CLIP-FT beyond the spread at knob 1 and not at knob 0, as its premise predicts" in line
    assert "knob 0 (control):" in line and "EI-CLIP ahead in 6 of 6: beyond the spread, EI-CLIP ahead" in line
    assert "brand +3.07 vs +2.07" in line  # the prone queries' gain beside the rest's, at knob 1
    assert ("confounding harm (knob 0 - knob 1: recall points lost to the confounder): CLIP zero-shot +3.00 ± 0.00, "
            "CLIP-FT +4.00 ± 0.00") in line
    found = sweep_reading({0.0: control, 1.0: noise})
    assert "does NOT beat CLIP-FT beyond the spread at knob 1" in found and "that is the finding" in found
    assert "beyond the spread, EI-CLIP" not in found
    assert "not specific to the confounder" in sweep_reading({0.0: clear, 1.0: clear})
    none = readings.sweep_numbers("paper", None)
    assert readings.read_sweep(none) == "profile paper: no confounding sweep (the real data has no knob)."


@given(unit, unit)
def test_purity_never_claims_a_difference_within_tolerance(a, b):
    line = readings.read_text_features(readings.purity_numbers(
        pd.DataFrame({FIRST: [a], SECOND: [b]}, index=["brand"]), FIRST, SECOND))
    printed = [float(x) for x in line.split("purity ")[1].replace(" (CLIP-FT) vs", "").split(" ")[:2]]
    claims = " more tightly" in line or " less tightly" in line
    assert claims == (round(abs(printed[1] - printed[0]), 3) > readings.PURITY_TOLERANCE)


@given(st.floats(-100, 100), st.floats(-100, 100))
def test_probe_never_claims_a_difference_within_tolerance(first, second):
    line = readings.read_probe(readings.probe_numbers(probe_summary({FIRST: first, SECOND: second}), FIRST, SECOND))
    printed_second = float(line.split("moves ")[1].split(" %")[0])
    printed_first = float(line.split("CLIP-FT (")[1].split(" %")[0])
    claims = "more than" in line or "less than" in line
    assert claims == (round(abs(printed_second - printed_first), 1) > readings.PROBE_TOLERANCE)


@given(st.integers(0, 40), st.integers(0, 40))
def test_examples_never_claim_a_winner_by_chance(a, b):
    line = readings.read_examples(readings.examples_numbers(FIRST, SECOND, 100, a, b, sign_test(a, b)))
    assert ("wins more of them" in line and "neither" not in line) == (sign_test(a, b) < readings.SIGNIFICANCE)


@pytest.mark.slow  # 100 drawn sweeps, each t-tested
@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy, on drawn gains that differ by ~1e-300
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=6))
def test_sweep_never_claims_a_gain_beyond_the_spread_without_the_paired_test(gains):
    from scipy.stats import ttest_rel

    line = sweep_reading({1.0: gains})
    ft = 16.0 + np.arange(len(gains))
    d = (ft + np.asarray(gains)) - ft
    p = ttest_rel(ft + np.asarray(gains), ft).pvalue if len(gains) >= 3 and np.ptp(d) > 0 else None
    assert ("beyond the spread, EI-CLIP" in line) == (p is not None and round(p, 6) < readings.SIGNIFICANCE)
    assert ("not tested" in line) == (p is None)


# ------------------------------------------------------------------ (b) a readings.json, read back


def check_readings_file(path) -> dict:
    """Assert that a readings.json of notebook 05 is whole and consistent: every section present, every
    reading equal to the one rebuilt from its recorded numbers, and the numbers within their ranges and
    consistent with each other. Returns the parsed record."""
    record = json.loads(open(path, encoding="utf-8").read())
    assert set(record) == set(readings.READERS), f"{path}: sections {sorted(record)}"
    for name, section in record.items():
        assert readings.READERS[name](section["numbers"]) == section["reading"], f"{path}: {name} reading"
    for name, check in CHECKS.items():
        check(record[name]["numbers"])
    return record


def _fraction(x, top=1.0):
    assert x is None or 0.0 <= x <= top, x


def _check_dictionaries(n):
    assert -1 <= n["frozen_cosine"] <= 1 and 0 <= n["changed"] <= n["shown"]
    _fraction(n["moved_p"])
    for g in n["groups"].values():
        assert g["values"] >= 1 and 0 <= g["moved_degrees"] <= 180 and -1 <= g["cos_before"] <= 1
    assert (n["moved_p"] is None) == (len(n["groups"]) < 2)
    for c in n["collisions"]:
        assert 0 <= c["before"] <= c["values"] and 0 <= c["after"] <= c["values"]
        assert 1 <= c["group_words"] <= c["words"]


def _check_text_features(n):
    for row in n["types"]:
        _fraction(row[n["first"]]), _fraction(row[n["second"]])


def _check_gates(n):
    means = [r["mean"] for r in n["types"]]
    assert means == sorted(means, reverse=True) and all(0 <= m <= 1 for m in means)
    ranges = [r["range"] for r in n["category_range"]]
    assert ranges == sorted(ranges, reverse=True) and all(0 <= r <= 1 for r in ranges)


def _check_attention(n):
    for r in n["types"]:
        assert r["queries"] >= 1
        for key in ("top1_own", "prior_top1_own", "weight_own", "prior_weight_own", "departure"):
            _fraction(r[key])


def _check_probe(n):
    for r in n["rows"]:
        for key in ("chance_pct", "before_pct", "after_pct", "moved_pct"):
            _fraction(r[key], 100.0)
        assert r["shift_points"] == pytest.approx(r["after_pct"] - r["before_pct"], abs=1e-5)


def _check_examples(n):
    assert 0 <= n["second_only"] + n["first_only"] <= n["queries"]
    assert n["sign_test_p"] == pytest.approx(sign_test(n["second_only"], n["first_only"]), abs=1e-6)


def _check_sweep(n):
    """Each knob's gain is EI-CLIP's mean minus CLIP-FT's (every run paired), each harm the row's lowest-knob
    mean minus its highest; no p below 3 pairs; wins and losses add up to at most the pairs."""
    rows = {(r["confounding"], r["row"]): r for r in n["rows"]}
    assert n["knobs"] == sorted(n["knobs"]) == [g["confounding"] for g in n["gains"]]
    for g in n["gains"]:
        first, second = rows[(g["confounding"], FIRST_LABEL)], rows[(g["confounding"], SECOND_LABEL)]
        assert g["n"] == first["n"] == second["n"] and g["wins"] + g["losses"] <= g["n"]
        assert g["gain"] == pytest.approx(second["mean"] - first["mean"], abs=1e-5)
        assert (g["p"] is None) or (g["n"] >= 3 and 0 <= g["p"] <= 1)
    for h in n["harm"]:
        assert h["harm"] == pytest.approx(rows[(h["low"], h["row"])]["mean"] - rows[(h["high"], h["row"])]["mean"],
                                          abs=1e-5)


CHECKS = {"dictionaries": _check_dictionaries, "text_features": _check_text_features, "gates": _check_gates,
          "attention": _check_attention, "probe": _check_probe, "examples": _check_examples, "sweep": _check_sweep}


def number_differences(got, want, abs_tol: float, where: str = "") -> list:
    """Paths at which two records differ: in structure, in text, or in a number by more than abs_tol."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{where}: keys {sorted(set(got) ^ set(want))}"]
        return [d for k in want for d in number_differences(got[k], want[k], abs_tol, f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, expected {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in number_differences(g, w, abs_tol, f"{where}/{i}")]
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(got, numbers) and not isinstance(want, bool):
        return [] if math.isclose(got, want, rel_tol=0, abs_tol=abs_tol) else [f"{where}: {got} != {want}"]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def fabricated_sections() -> dict:
    """Every section of notebook 05 as {"numbers", "reading"}, from the fabricated measures above."""
    attention = pd.DataFrame({"queries": [128, 86], "top1_is_own": [0.164, 0.209], "prior_top1_is_own": [0.164, 0.221],
                              "weight_on_own": [0.1, 0.13], "prior_weight_on_own": [0.1, 0.13],
                              "departure_from_prior": [0.0, 0.001]}, index=["brand", "fit"])
    gates = pd.DataFrame({"mean": [0.525, 0.493], "std": [0.01, 0.02]}, index=["fit", "brand"])
    numbers = {
        "dictionaries": readings.dictionary_numbers(shift_table(), neighbour_table(), 1.0, 0.41, collision_table()),
        "text_features": readings.purity_numbers(pd.DataFrame({FIRST: [0.102], SECOND: [0.1021]}, index=["brand"]),
                                                 FIRST, SECOND),
        "gates": readings.gate_numbers(gates, pd.DataFrame([[0.5, 0.51], [0.52, 0.49]], columns=["fit", "brand"])),
        "attention": readings.attention_numbers(attention),
        "probe": readings.probe_numbers(probe_summary({FIRST: -0.2, SECOND: 0.2}), FIRST, SECOND),
        "examples": readings.examples_numbers(FIRST, SECOND, 128, 3, 1, sign_test(3, 1)),
        "sweep": readings.sweep_numbers("smoke", sweep_summary({0.0: [1.04], 1.0: [0.26]}))}
    return {name: {"numbers": n, "reading": readings.READERS[name](n), "figure": None} for name, n in numbers.items()}


def test_records_name_the_models_by_their_labels():
    numbers = {name: section["numbers"] for name, section in fabricated_sections().items()}
    assert set(numbers["text_features"]["types"][0]) == {"type", FIRST_LABEL, SECOND_LABEL}
    assert [r["model"] for r in numbers["probe"]["rows"]] == [FIRST_LABEL, SECOND_LABEL]
    for name in ("text_features", "probe", "examples"):
        assert (numbers[name]["first"], numbers[name]["second"]) == (FIRST_LABEL, SECOND_LABEL)
    assert [h["row"] for h in numbers["sweep"]["harm"]] == ["CLIP zero-shot", FIRST_LABEL, SECOND_LABEL]


def test_readings_file_is_written_sorted_atomically_and_reads_back(tmp_path):
    path = readings.write_readings(tmp_path, fabricated_sections())
    assert path == tmp_path / "readings.json" and [p.name for p in tmp_path.iterdir()] == ["readings.json"]
    text = path.read_text()
    assert text.endswith("}\n") and text == json.dumps(json.loads(text), indent=1, sort_keys=True) + "\n"
    record = check_readings_file(path)
    assert record["sweep"]["numbers"]["gains"][1]["gain"] == 0.26
    assert number_differences(record, json.loads(text), abs_tol=0) == []


def test_readings_file_check_fails_on_a_reading_that_does_not_follow_its_numbers(tmp_path):
    sections = fabricated_sections()
    path = readings.write_readings(tmp_path, sections)
    record = json.loads(path.read_text())
    record["probe"]["numbers"]["rows"][1]["shift_points"] = 5.0  # the sentence still says 0.2 %
    path.write_text(json.dumps(record))
    with pytest.raises(AssertionError, match="probe reading"):
        check_readings_file(path)
    del sections["sweep"]
    with pytest.raises(AssertionError, match="sections"):
        check_readings_file(readings.write_readings(tmp_path, sections))


def test_number_differences_use_the_tolerance():
    want = {"a": [1.0, {"b": 0.5}], "c": "x", "d": True}
    assert number_differences({"a": [1.0004, {"b": 0.5}], "c": "x", "d": True}, want, abs_tol=1e-3) == []
    assert number_differences({"a": [1.01, {"b": 0.5}], "c": "y", "d": True}, want, abs_tol=1e-3) == [
        "/a/0: 1.01 != 1.0", "/c: 'y' != 'x'"]
    assert number_differences({"a": [1.0], "c": "x", "d": True}, want, abs_tol=1) == ["/a: 1 items, expected 2"]
