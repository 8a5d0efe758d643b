"""Evaluate runs on a data folder's validation split: embed every view and text with every model (cached,
eiclip_core.evaluation.embeddings), score them under the three protocols (eiclip_core.evaluation.scoring),
and write the results table (METHOD.md section 10, FASHIONGEN.md "Evaluation protocols").

Rows: CLIP zero-shot (the untrained backbone), then the trained rows (CLIP-FT, EI-CLIP, ablations), each
seed's run from `<data_dir>/runs/<row>/seed<k>/final.pt`. The sample-100 draws and the bootstrap use the
`seed` given here (default 0), not the training seed, so the spread over training seeds is not mixed
with a different sample. `eiclip evaluate` and notebook 04 evaluate a profile's rows through
eiclip_core.pipeline.evaluate_command.
"""
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from eiclip_core import layout
from eiclip_core.errors import KitError
from eiclip_core.evaluation.embeddings import ENCODE_BATCH, cached_embeddings
from eiclip_core.evaluation.results import (breakdown_table, published_records, results_markdown,
                                            summary_table)
from eiclip_core.evaluation.sample100 import sample100_unmeasurable
from eiclip_core.evaluation.scoring import SPLIT, entity_breakdown, evaluate_embeddings
from eiclip_core.io import read_json_object, write_json, write_text
from eiclip_core.model.checkpoint import checkpoint_id
from eiclip_core.protocols import PROTOCOLS, ZERO_SHOT


@dataclasses.dataclass
class Evaluation:
    """Everything notebook 04 shows: records, breakdown, tables, and embeddings for examples."""

    profile: str
    records: list  # one per row x protocol x seed (metric keys, protocol, n_queries, ...)
    breakdown: list  # one per row x seed x type x status
    summary: object  # pandas DataFrame (results.summary_table)
    breakdown_summary: object  # pandas DataFrame (results.breakdown_table)
    embeddings: dict  # (row, seed) -> Embeddings
    data_path: Path
    published: bool  # real data: the papers' numbers stand beside ours
    not_measured: dict = dataclasses.field(default_factory=dict)  # protocol -> why it has no records
    loaders: dict = dataclasses.field(default_factory=dict)  # (row, seed) -> () -> (model, backbone)

    def to_json(self) -> dict:
        return {"profile": self.profile, "split": SPLIT,
                "protocols": [p for p in PROTOCOLS if p not in self.not_measured],
                "not_measured": self.not_measured, "records": self.records, "breakdown": self.breakdown,
                "published": published_records() if self.published else []}


def run_dirs(data_dir, rows, seeds, artifact_id: str) -> list[tuple[str, int, Path]]:
    """(row, seed, run dir) of every finished run (layout.run_finished) asked for; KitError naming a
    missing one, or one trained on another entity artifact than `artifact_id` (its numbers would describe
    other data)."""
    out = []
    for row in rows:
        for seed in seeds:
            d = layout.run_dir(data_dir, row, seed)
            if not layout.run_finished(d):
                raise KitError(f"{d}: run not finished (no {' / '.join(layout.FINISHED_RUN_FILES)}); "
                               "train it with notebook 03 or `eiclip train`")
            trained_on = read_json_object(d / "config.json", "run config").get("entity_artifact_id")
            if trained_on != artifact_id:
                raise KitError(f"{d}: run trained on entity artifact {trained_on}, the data's is {artifact_id} "
                               "(train it again on this data)")
            out.append((row, seed, d))
    return out


def evaluate_runs(data_dir, rows, seeds, backbone: str, pretrained: str = "", *, profile: str,
                  published: bool = False, sample100_queries: int = 1000, device="auto", seed: int = 0,
                  batch_size: int = ENCODE_BATCH, protocols=PROTOCOLS) -> Evaluation:
    """Evaluate the zero-shot row (`backbone` with `pretrained` weights) and the runs of `rows` x `seeds`
    on `data_dir`'s validation split. `profile` names the evaluation in results.json; `published`: the
    papers' numbers stand beside ours (real data); `sample100_queries`: queries per sample-100 repeat.

    A protocol the split is too small for (sample-100 below 101 products, as on a small imported
    catalog) is left out with one printed line and listed in `not_measured`, never scored on fewer
    candidates."""
    from eiclip_core.data import FashionGen
    from eiclip_core.entities import load_artifact
    from eiclip_core.runtime import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    data_path, entities_path = layout.split_file(data_dir, SPLIT), layout.entities_file(data_dir)
    artifact, split = load_artifact(entities_path), FashionGen(data_path)
    pids = split.products["product_id"].to_numpy()
    if not np.array_equal(artifact.product_ids(SPLIT), pids):
        raise KitError(f"{entities_path}: its {SPLIT} product ids differ from {data_path} (re-run `eiclip mine`)")
    runs = run_dirs(data_dir, rows, seeds, artifact.id)  # fail before any work if one is missing
    not_measured = _not_measured(protocols, len(pids), data_path)
    protocols = [p for p in protocols if p not in not_measured]

    jobs = [(ZERO_SHOT, None, None)] + runs
    records, breakdown, embeddings, loaders = [], [], {}, {}
    for row, run_seed, run_dir in tqdm(jobs, desc="runs"):
        key, load = _model(run_dir, backbone, pretrained, artifact.id, entities_path, device)
        emb = cached_embeddings(load, key, split, layout.cache_dir(data_dir), device, batch_size=batch_size)
        embeddings[(row, run_seed)], loaders[(row, run_seed)] = emb, load
        scored = evaluate_embeddings(emb, pids, split.products["subcategory"].to_numpy(), protocols,
                                     n_sample_queries=sample100_queries, seed=seed)
        for protocol, s in scored.items():
            records.append({"row": row, "protocol": protocol, "seed": run_seed, **s["metrics"],
                            "n_queries": s["n_queries"], "n_candidates": s["n_candidates"], "sample_seed": seed,
                            "run_dir": run_dir and str(run_dir), "checkpoint_hash": key.get("checkpoint")})
        if "full" in scored:
            for rec in entity_breakdown(*scored["full"]["ranks"], artifact, len(pids)):
                breakdown.append({"row": row, "seed": run_seed, **rec})
    return Evaluation(profile=profile, records=records, breakdown=breakdown,
                      summary=summary_table(records, published=published), breakdown_summary=breakdown_table(breakdown),
                      embeddings=embeddings, data_path=data_path, published=published, not_measured=not_measured,
                      loaders=loaders)


def _not_measured(protocols, n_products: int, data_path) -> dict:
    """protocol -> why the split cannot be scored under it (sample-100 on too few products), each printed."""
    why = {"sample-100": sample100_unmeasurable(n_products)} if "sample-100" in protocols else {}
    why = {p: reason for p, reason in why.items() if reason}
    for protocol, reason in why.items():
        print(f"{protocol}: not measured on {data_path}: {reason}")
    return why


def _model(run_dir, backbone: str, pretrained: str, artifact_id: str, entities_path, device) -> tuple:
    """(cache key, load) of one row's model: the run's final.pt, or (run_dir None) the zero-shot backbone.
    `load() -> (model, backbone)` loads at most once: for the embeddings and again for notebook 04's probe."""
    from eiclip_core.model.factory import load_run, zero_shot

    if run_dir is None:
        key = {"zero_shot": backbone, "pretrained": pretrained, "entities": artifact_id}
        return key, functools.cache(lambda: zero_shot(backbone, pretrained, entities_path, device))
    return {"checkpoint": checkpoint_id(run_dir / "final.pt")}, functools.cache(lambda: load_run(run_dir, device)[:2])


def write_results(evaluation: Evaluation, reports_dir) -> tuple[Path, Path]:
    """results.json and results.md under reports_dir, each written atomically."""
    reports_dir = Path(reports_dir)
    json_path, md_path = reports_dir / "results.json", reports_dir / "results.md"
    results = evaluation.to_json()
    measured = reports_dir / "confounding.json"  # notebook 01: the confounder before fine-tuning
    if measured.is_file():
        results["confounding"] = json.loads(measured.read_text())
    write_json(json_path, results)
    write_text(md_path, results_markdown(evaluation.profile, evaluation.summary, evaluation.breakdown_summary,
                                         evaluation.not_measured))
    return json_path, md_path
