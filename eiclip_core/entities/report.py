"""Tables about an entity artifact, for notebook 02 (kept here so the notebook stays thin); its figure
of the priors is eiclip_core.figures.priors_figure."""
import numpy as np
import pandas as pd

from eiclip_core.entities.artifact import EntityArtifact

# displacy label colours per type (any type not listed gets displacy's default)
COLOURS = {"BRAND": "#f4a261", "CATEGORY": "#8ecae6", "SUBCATEGORY": "#bde0fe", "COMPOSITION": "#cdeac0",
           "SEASON": "#e9c46a", "FIT": "#ffafcc", "GENDER": "#d8e2dc", "DEPARTMENT": "#d8e2dc"}


def vocabulary_table(art: EntityArtifact) -> pd.DataFrame:
    """Per type: vocabulary size (with "other"), training products in "other", prone values, coverage."""
    rows = []
    for t in art.all_types:
        row = {"type": t, "model type": t in art.types, "values": len(art.values[t]),
               "in other": int(art.counts[t][-1]), "prone": int(art.prone[t].sum())}
        row.update({f"coverage {s}": round(c, 2) for s, c in art.coverage[t].items()})
        rows.append(row)
    return pd.DataFrame(rows).set_index("type")


def top_values(art: EntityArtifact, k: int = 5) -> pd.DataFrame:
    """The k most frequent values of each type with training count and prior (3 decimals, as text so
    the display is the same whatever pandas' display precision)."""
    rows = []
    for t in art.all_types:
        for i in range(min(k, len(art.values[t]) - 1)):
            rows.append({"type": t, "rank": i + 1, "value": art.values[t][i], "count": int(art.counts[t][i]),
                         "prior": f"{art.prior[t][i]:.3f}", "prone": bool(art.prone[t][i])})
        rows.append({"type": t, "rank": len(art.values[t]), "value": "other", "count": int(art.counts[t][-1]),
                     "prior": f"{art.prior[t][-1]:.3f}", "prone": False})
    return pd.DataFrame(rows).set_index(["type", "rank"])


def prone_values(art: EntityArtifact, k: int = 8) -> pd.DataFrame:
    """Up to k confounding-prone values per model type, most frequent first, with the reason."""
    rows = []
    for t in art.types:
        idx = [i for i in np.flatnonzero(art.prone[t])][:k]
        rows += [{"type": t, "value": art.values[t][i], "count": int(art.counts[t][i]),
                  "reason": art.prone_reason[t][i]} for i in idx]
    return pd.DataFrame(rows, columns=["type", "value", "count", "reason"])


def displacy_example(text: str, mentions: list, title=None) -> dict:
    """A displacy "manual" entity document: {"text", "ents", "title"} with one label per type."""
    ents = [{"start": s, "end": e, "label": t.upper()} for s, e, t, _ in sorted(mentions)]
    # displacy needs non-overlapping spans; a span naming two types keeps the first label
    kept, end = [], -1
    for ent in ents:
        if ent["start"] >= end:
            kept.append(ent)
            end = ent["end"]
    return {"text": text, "ents": kept, "title": title}


def example_rows(mentions: list, n: int = 4, most_types: int = 3) -> list:
    """Up to n products (in order) whose texts name the most entity types, at most `most_types` counted:
    products naming three types when there are enough, else fewer (a catalog whose texts name only
    their subcategory still shows spans); none when no text names any value."""
    kinds = [min(len({m[2] for m in ms}), most_types) for ms in mentions]
    ranked = sorted((i for i, k in enumerate(kinds) if k > 0), key=lambda i: (-kinds[i], i))[:n]
    return sorted(ranked)
