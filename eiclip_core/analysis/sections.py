"""Notebook 05, the confounder made visible (METHOD.md sections 1, 3 to 6): one call per section.

Each section takes the analysed runs (eiclip_core.analysis.runs), computes its measures
(eiclip_core.analysis.measures), draws and saves its figure (eiclip_core.figures) and returns the tables with
the record of numbers its reading is computed from (eiclip_core.analysis.readings):
{"figure": path or None, <tables>, "numbers": record, "reading": sentences}. The notebook stays a list
of calls and ends by writing every section's numbers and reading to <reports_dir>/readings.json.

The tables carry field names and name the two models as eiclip_core.protocols does (BASELINE, METHOD);
`shown` gives a table the labels the notebook shows ("moved (degrees)", "CLIP-FT", ...).
"""
import numpy as np
import pandas as pd

from eiclip_core.analysis import measures
from eiclip_core.analysis import readings
from eiclip_core.analysis.runs import AnalysedRuns
from eiclip_core.evaluation.results import row_label
from eiclip_core.figures import (attention_figure, dictionary_figure, gate_figure, probe_figure,
                                 retrieval_examples_figure, save_figure, sweep_figure, text_umap_figure)
from eiclip_core.protocols import BASELINE, METHOD

# The labels notebook 05 shows for the fields of its tables; the probe's top-k shares name their k.
COLUMN_LABELS = {
    "moved_degrees": "moved (degrees)", "nearest_word_cos_before": "nearest word cos before",
    "nearest_word_cos_after": "nearest word cos after", "nearest_words_before": "before (D_t)",
    "nearest_words_after": "after (E_t)", "cos_before": "cos before", "cos_after": "cos after",
    "collides_with": "collides with", "group_before": "group before", "group_after": "group after",
    "group_words": "group words", "nearest_before": "nearest before", "nearest_after": "nearest after",
    "top1_is_own": "top-1 is own value", "prior_top1_is_own": "prior top-1 is own value",
    "weight_on_own": "weight on own value", "prior_weight_on_own": "prior weight on own value",
    "departure_from_prior": "departure from prior", "chance_pct": "chance %", "top_k_before_pct": "top-{k} before %",
    "top_k_after_pct": "top-{k} after %", "shift_points": "shift (points)", "queries_moved_pct": "queries moved %",
    "mean_recall": "mean R", "method_wins": f"{row_label(METHOD)} wins",
    "baseline_wins": f"{row_label(BASELINE)} wins"}


def _frozen_check(runs: AnalysedRuns, d: dict) -> float:
    """Mean cosine between D_t and the frozen tower's encoding of the same prompts: 1 when the general
    words below are encoded in the space of D_t."""
    from eiclip_core.model.eiclip import prompt_texts

    model, values = runs.models[METHOD], runs.artifact.values
    return float(np.mean([np.mean(np.sum(d[t] * measures.encode_texts(runs.frozen, runs.tokenizer, prompt_texts(
        t, values[t], model.cfg.prompt), runs.device), axis=1)) for t in model.types]))


def _labelled_values(runs: AnalysedRuns, n_values: int) -> list:
    """(kind, type, index) of the values the dictionary map names: the most frequent value of each collision
    kind present (measures.collision_picks); without any (a catalog of other names), the n_values most
    frequent prone values (measures.highlight_values), of kind ""."""
    model, art = runs.models[METHOD], runs.artifact
    picks = measures.collision_picks(art.values, art.counts, model.types)
    prone = {t: art.prone[t] for t in model.types}
    return picks or [("", t, i) for t, i in measures.highlight_values(art.values, prone, art.counts, model.types,
                                                                      n_values)]


def section_dictionaries(runs: AnalysedRuns, reports_dir, seed: int = 0, n_values: int = 6) -> dict:
    """UMAP of D_t next to E_t among general English words grouped by meaning; the labelled values (one per
    collision kind) with their nearest words and general-word group before/after; per collision kind, how
    many values sit nearest the group they collide with."""
    model, art = runs.models[METHOD], runs.artifact
    d, e = measures.dictionaries(model)
    words = list(measures.GENERAL_WORDS)
    word_emb = measures.encode_texts(runs.frozen, runs.tokenizer, words, runs.device)
    prone = {t: art.prone[t] for t in model.types}
    chosen = _labelled_values(runs, n_values)
    neighbours = measures.neighbour_table(d, e, art.values, chosen, words, word_emb)
    shift = measures.dictionary_shift(d, e, prone, word_emb)
    collisions = measures.collision_table(d, e, art.values, word_emb, words)
    numbers = readings.dictionary_numbers(shift, neighbours, _frozen_check(runs, d),
                                          measures.moved_rank_test(measures.moved_degrees(d, e, prone)), collisions)
    fig = dictionary_figure(d, e, art.values, prone, [(t, i) for _, t, i in chosen], words,
                            measures.unit_rows(word_emb), [measures.WORD_GROUP[w] for w in words], seed)
    return {"figure": save_figure(fig, reports_dir, "05_dictionaries"), "neighbours": neighbours, "shift": shift,
            "collisions": collisions, "numbers": numbers, "reading": readings.read_dictionaries(numbers)}


def section_text_features(runs: AnalysedRuns, reports_dir, seed: int = 0, types=("brand", "category", "fit"),
                          max_points: int = 5000) -> dict:
    """UMAP of validation text features of both models coloured by entity types, with kNN purity.

    At most `max_points` products (a seeded sample; all of a generated split), so the real 32k-product
    validation split neither fills memory with an N x N similarity matrix nor makes UMAP slow. A type no
    validation product has a value of (a catalog that maps no brand) is left out and named in the reading;
    with none left, no figure."""
    n = len(runs.texts)
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_points]) if n > max_points else np.arange(n)
    features = {row: emb.text[keep] for row, emb in runs.embeddings.items()}
    labels = {t: np.asarray(runs.labels(t), dtype=object)[keep] for t in types if t in runs.artifact.all_types}
    missing = [t for t in types if t not in labels or not any(v is not None for v in labels[t])]
    labels = {t: v for t, v in labels.items() if t not in missing}
    purity = measures.purity_table(features, labels)
    numbers = readings.purity_numbers(purity, BASELINE, METHOD, not_shown=missing)
    path = save_figure(text_umap_figure(features, labels, seed), reports_dir, "05_text_features") if labels else None
    return {"figure": path, "purity": purity, "numbers": numbers, "reading": readings.read_text_features(numbers)}


def section_gates(runs: AnalysedRuns, reports_dir) -> dict:
    """The CESM gates g_t of EI-CLIP on every validation text: per type and per category."""
    model = runs.models[METHOD]
    gates, attention = measures.gates_and_attention(model, runs.tokenizer, runs.texts, runs.device)
    table = measures.gate_table(gates, model.types)
    by_category = measures.gate_by_group(gates, model.types, runs.data.products["category"])
    numbers = readings.gate_numbers(table, by_category)
    fig = gate_figure(gates, model.types, by_category)
    return {"figure": save_figure(fig, reports_dir, "05_gates"), "table": table, "by_category": by_category,
            "attention": attention, "numbers": numbers, "reading": readings.read_gates(numbers)}


def _attention_examples(runs: AnalysedRuns, attention: dict, entity_type: str, n: int, seed: int) -> list:
    """n example queries of one type (seeded; queries with a prone value first) for attention_figure."""
    art = runs.artifact
    own = art.value_ids("validation")[entity_type]
    known = np.flatnonzero(own >= 0)
    prone = known[art.prone[entity_type][own[known]]]
    pool = prone if len(prone) >= n else known  # empty when no validation product has a value of the type
    picks = np.sort(np.random.default_rng(seed).permutation(pool)[:n])
    return [{"text": runs.texts[q], "type": entity_type, "values": art.values[entity_type],
             "attention": attention[entity_type][q], "prior": art.prior[entity_type], "own": int(own[q])}
            for q in picks]


def section_attention(runs: AnalysedRuns, reports_dir, attention: dict, entity_type: str = "brand", n: int = 3,
                      seed: int = 0) -> dict:
    """Attention over one dictionary for n example queries (seeded, prone values first), and how often
    the attention's top value is the query's own value for every type. No figure when no validation
    product has a value of `entity_type` (a catalog without brands): the reading says so."""
    art = runs.artifact
    table = measures.attention_table(attention, art.value_ids("validation"), art.prior)
    examples = _attention_examples(runs, attention, entity_type, n, seed) if entity_type in attention else []
    numbers = readings.attention_numbers(table, entity_type if not examples else None)
    path = save_figure(attention_figure(examples), reports_dir, "05_attention") if examples else None
    return {"figure": path, "table": table, "numbers": numbers, "reading": readings.read_attention(numbers)}


def section_probe(runs: AnalysedRuns, reports_dir, n_queries: int = 200, k: int = 10, seed: int = 0) -> dict:
    """The counterfactual probe (eiclip_core.analysis.counterfactual_swap) for CLIP-FT and EI-CLIP on the same
    swaps, measured on the top k; no figure when no validation text mentions a value that can be swapped (a
    catalog without brands or mentions)."""
    from eiclip_core.analysis import counterfactual_swap

    art = runs.artifact
    models = {row: (runs.encoder(row), runs.gallery(row), runs.embeddings[row].text) for row in runs.models}
    summary, details = counterfactual_swap.run_probe(models, runs.texts, art.mentions("validation"),
                                                     art.value_ids("validation"), art.values,
                                                     counterfactual_swap.PROBE_TYPES, n_queries=n_queries, k=k,
                                                     seed=seed)
    swapped = [df.head(2).assign(type=t) for (t, row), df in details.items() if row == METHOD and len(df)]
    examples = pd.concat(swapped) if swapped else pd.DataFrame(columns=["type", "text", "swapped"])
    numbers = readings.probe_numbers(summary, BASELINE, METHOD, counterfactual_swap.PROBE_TYPES)
    path = save_figure(probe_figure(summary, k), reports_dir, "05_probe") if len(summary) else None
    return {"figure": path, "table": summary, "k": k,
            "examples": examples[["type", "text", "swapped"]].reset_index(drop=True), "numbers": numbers,
            "reading": readings.read_probe(numbers)}


def _disagreement_cases(runs: AnalysedRuns, found: tuple, k: int) -> list:
    """Both models' top k for every example query of `found` (measures.disagreements), each labelled with
    which model ranks it right and the model shown, for retrieval_examples_figure."""
    from eiclip_core.evaluation.scoring import retrieval_examples

    cases = []
    for group in found:
        for q in group.examples:
            for row in runs.models:
                (case,) = retrieval_examples(runs.embeddings[row], runs.texts, k=k, queries=[q])
                label = f"{row_label(group.right)} right, {row_label(group.wrong)} wrong\n{row_label(row)}"
                cases.append({**case, "label": label})
    return cases


def section_examples(runs: AnalysedRuns, reports_dir, n: int = 2, k: int = 5, seed: int = 0) -> dict:
    """Text -> image queries CLIP-FT gets wrong and EI-CLIP right (top-1), and the reverse."""
    from eiclip_core.evaluation.metrics import positive_ranks

    pids = runs.data.products["product_id"].to_numpy()
    ranks = {row: positive_ranks(runs.embeddings[row].text, runs.gallery(row), pids, pids) for row in runs.models}
    found = measures.disagreements(ranks, BASELINE, METHOD, n=n, seed=seed)
    cases = _disagreement_cases(runs, found, k)
    path = None
    if cases:
        title = f"Text -> image retrieval: top {k} (green frame = the query's product)"
        fig = retrieval_examples_figure(cases, lambda p: runs.data.image(int(runs.data.first_row[p])), title)
        path = save_figure(fig, reports_dir, "05_examples")
    method_only, baseline_only = (group.count for group in found)
    p = measures.sign_test(method_only, baseline_only)
    numbers = readings.examples_numbers(BASELINE, METHOD, len(pids), method_only, baseline_only, p)
    return {"figure": path, "disagreements": found, "numbers": numbers, "reading": readings.read_examples(numbers)}


def section_sweep(profile, data_dir, reports_dir, device="cpu") -> dict:
    """Zero-shot, CLIP-FT and EI-CLIP against the generator's confounding knob (eiclip_core.analysis.sweep), over
    the profile's data seeds and training seeds, with the spread, the harm, EI-CLIP's paired gain and
    its gain on queries with confounding-prone values (eiclip_core.analysis.sweep_statistics)."""
    from eiclip_core.analysis import sweep
    from eiclip_core.analysis import sweep_statistics

    if profile.real_data or not profile.confounding_sweep:
        numbers = readings.sweep_numbers(profile.name, None)
        return {"figure": None, "table": None, "numbers": numbers, "reading": readings.read_sweep(numbers)}
    runs = sweep.run_sweep(profile, data_dir, device)
    summary = {"recall": sweep_statistics.recall_table(runs.recalls),
               "harm": sweep_statistics.harm_table(runs.recalls), "gain": sweep_statistics.gain_table(runs.recalls),
               "prone": sweep_statistics.prone_gain_table(runs.breakdown)}
    numbers = readings.sweep_numbers(profile.name, summary)
    figure = save_figure(sweep_figure(summary["recall"], summary["gain"]), reports_dir, "05_sweep")
    return {"figure": figure, "table": summary["recall"], **summary, "runs": runs, "numbers": numbers,
            "reading": readings.read_sweep(numbers)}


def shown(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """`table` as notebook 05 shows it: each field by its label (COLUMN_LABELS; the probe's top-k shares with
    k in the label), a column named by a row (a model's purity) and the rows and models in the columns "row"
    and "model" by their display labels (eiclip_core.evaluation.results.row_label)."""
    out = table.rename(columns=lambda c: COLUMN_LABELS[c].format(k=k) if c in COLUMN_LABELS else row_label(c))
    return out.assign(**{c: out[c].map(row_label) for c in ("row", "model") if c in out})
