"""The entity artifact: one versioned JSON file per data set that training and notebook 05 read.

It holds, per entity type t (METHOD.md section 3): the vocabulary V_t (last entry "other"), the
training counts, the smoothed prior P_t(z), the confounding-prone flags with their reasons and the
mention coverage; and per split: the product ids, the value index of every product (-1 = missing)
and the mention spans found in its text. `id` is a hash of the content, so caches built from an
artifact (e.g. the dictionaries D_t) can be keyed by it.

Layout (version 1):
    {"version": 1, "id": "<16 hex>", "types": [...model types...], "all_types": [...],
     "params": {...how it was mined...}, "sources": {"train": "train.h5", ...},
     "vocab": {t: {"values": [...], "counts": [...], "prior": [...], "prone": [...],
                   "prone_reason": [...], "coverage": {split: float}}},
     "splits": {split: {"n_products": N, "product_id": [...], "value_ids": {t: [...]},
                        "mentions": [[[start, end, type, value], ...], ...]}}}
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from eiclip_core.errors import KitError
from eiclip_core.io import read_json, write_json

ARTIFACT_VERSION = 1
OTHER = "other"  # the last value of every vocabulary: rare training values and unseen ones


def content_id(content: dict) -> str:
    """Hash of everything but the id itself (canonical JSON), 16 hex digits."""
    body = {k: v for k, v in content.items() if k != "id"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class EntityArtifact:
    """Read-only view of an artifact dict; numpy arrays are built once, on first use."""

    def __init__(self, content: dict, path=None):
        self._c = content
        self.path = Path(path) if path is not None else None
        vocab = content["vocab"]
        self.all_types = list(content["all_types"])
        self.types = list(content["types"])
        self.values = {t: list(vocab[t]["values"]) for t in self.all_types}
        self.counts = {t: np.asarray(vocab[t]["counts"], dtype=np.int64) for t in self.all_types}
        self.prior = {t: np.asarray(vocab[t]["prior"], dtype=np.float64) for t in self.all_types}
        self.prone = {t: np.asarray(vocab[t]["prone"], dtype=bool) for t in self.all_types}
        self.prone_reason = {t: list(vocab[t]["prone_reason"]) for t in self.all_types}
        self.coverage = {t: dict(vocab[t]["coverage"]) for t in self.all_types}
        self._value_ids = {}

    @property
    def id(self) -> str:
        return self._c["id"]

    @property
    def params(self) -> dict:
        return dict(self._c["params"])

    @property
    def splits(self) -> list:
        return list(self._c["splits"])

    def n_products(self, split: str) -> int:
        return self._split(split)["n_products"]

    def product_ids(self, split: str) -> np.ndarray:
        return np.asarray(self._split(split)["product_id"], dtype=np.int64)

    def value_ids(self, split: str) -> dict:
        """t -> int64 array (n_products,), aligned with FashionGen(split file).products; -1 = missing."""
        if split not in self._value_ids:
            ids = self._split(split)["value_ids"]
            self._value_ids[split] = {t: np.asarray(ids[t], dtype=np.int64) for t in self.all_types}
        return {t: a.copy() for t, a in self._value_ids[split].items()}

    def mentions(self, split: str) -> list:
        """Per product, the list of (start, end, type, value) spans in its text."""
        return [[tuple(m) for m in ms] for ms in self._split(split)["mentions"]]

    def to_dict(self) -> dict:
        return self._c

    def _split(self, split: str) -> dict:
        if split not in self._c["splits"]:
            raise KeyError(f"split {split!r} not in artifact (has {', '.join(self._c['splits'])})")
        return self._c["splits"][split]

    def __repr__(self):
        sizes = ", ".join(f"{t}={len(self.values[t])}" for t in self.types)
        return f"EntityArtifact(id={self.id!r}, {sizes})"


def write_artifact(path, content: dict) -> EntityArtifact:
    """Stamp version and id, check the structure, write atomically; returns the loaded view."""
    content = {"version": ARTIFACT_VERSION, **{k: v for k, v in content.items() if k not in ("version", "id")}}
    content["id"] = content_id(content)
    _validate(content, path)
    write_json(path, content, indent=None)  # compact: indented mention lists would take several times the space
    return EntityArtifact(content, path)


def load_artifact(path) -> EntityArtifact:
    """Load and check an artifact; KitError naming the file on any problem."""
    path = Path(path)
    content = read_json(path, "entity artifact", missing_hint="create it with `eiclip mine`")
    if not isinstance(content, dict):
        raise KitError(f"{path}: not an entity artifact (top level is not an object)")
    if content.get("version") != ARTIFACT_VERSION:
        raise KitError(f"{path}: entity artifact version {content.get('version')!r}, "
                       f"this kit reads version {ARTIFACT_VERSION} (re-run `eiclip mine`)")
    _validate(content, path)
    if content["id"] != content_id(content):
        raise KitError(f"{path}: content does not match its id (file edited or truncated; re-run `eiclip mine`)")
    return EntityArtifact(content, path)


def _validate(c: dict, path) -> None:
    """Structure checks that every reader relies on; KitError naming the file and the key. Each field is
    checked to be of its kind (object, list, whole number) before it is used, so a hand-edited file is
    one line, never a TypeError from inside the checks."""
    def fail(msg):
        raise KitError(f"{path}: {msg}")

    for key in ("id", "types", "all_types", "params", "vocab", "splits"):
        if key not in c:
            fail(f"key {key!r} missing")
    if not isinstance(c["all_types"], list) or not all(isinstance(t, str) for t in c["all_types"]):
        fail("'all_types' must be a list of strings")
    if not isinstance(c["types"], list) or not set(c["types"]) <= set(c["all_types"]):
        fail("'types' must be a list of types found in 'all_types'")
    for t in c["all_types"]:
        _validate_vocab(c["vocab"].get(t) if isinstance(c["vocab"], dict) else None, f"vocab[{t!r}]", fail)
    if not isinstance(c["splits"], dict) or not c["splits"]:
        fail("'splits' must name at least one split")
    for s, d in c["splits"].items():
        _validate_split(d, f"splits[{s!r}]", {t: len(c["vocab"][t]["values"]) for t in c["all_types"]}, fail)


def _is_whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate_vocab(v, where: str, fail) -> None:
    """One type's vocabulary: its lists of equal length, ending with OTHER, and a probability prior."""
    if not isinstance(v, dict):
        fail(f"{where} missing")
    for key in ("values", "counts", "prior", "prone", "prone_reason", "coverage"):
        if key not in v:
            fail(f"{where} key {key!r} missing")
        if not isinstance(v[key], dict if key == "coverage" else list):
            fail(f"{where}[{key!r}] must be {'an object' if key == 'coverage' else 'a list'}")
    n = len(v["values"])
    if n == 0 or v["values"][-1] != OTHER:
        fail(f"{where}['values'] must end with {OTHER!r}")
    if not all(isinstance(x, str) for x in v["values"]) or len(set(v["values"])) != n:
        fail(f"{where}['values'] must be distinct strings")
    for key in ("counts", "prior", "prone", "prone_reason"):
        if len(v[key]) != n:
            fail(f"{where}[{key!r}] has {len(v[key])} entries, 'values' has {n}")
    prior = v["prior"]
    if any(not isinstance(p, (int, float)) or p < 0 for p in prior) or not math.isclose(sum(prior), 1.0, abs_tol=1e-6):
        fail(f"{where}['prior'] is not a probability vector")


def _validate_split(d, where: str, sizes: dict, fail) -> None:
    """One split: n_products, and per product an id, its mentions and a value index per type (-1 = missing)
    within the vocabulary of `sizes[type]` values."""
    if not isinstance(d, dict):
        fail(f"{where} must be an object, got {type(d).__name__}")
    for key in ("n_products", "product_id", "value_ids", "mentions"):
        if key not in d:
            fail(f"{where} key {key!r} missing")
    n = d["n_products"]
    if not _is_whole(n):
        fail(f"{where}['n_products'] must be a whole number")
    for key in ("product_id", "mentions"):
        if not isinstance(d[key], list):
            fail(f"{where}[{key!r}] must be a list")
    if not isinstance(d["value_ids"], dict):
        fail(f"{where}['value_ids'] must be an object")
    if len(d["product_id"]) != n or len(d["mentions"]) != n:
        fail(f"{where}: product_id/mentions lengths differ from n_products={n}")
    for t, size in sizes.items():
        ids = d["value_ids"].get(t)
        if not isinstance(ids, list) or not all(_is_whole(i) for i in ids):
            fail(f"{where}['value_ids'][{t!r}] must be a list of whole numbers")
        if len(ids) != n:
            fail(f"{where}['value_ids'][{t!r}] missing or not {n} long")
        if ids and (min(ids) < -1 or max(ids) >= size):
            fail(f"{where}['value_ids'][{t!r}] out of range for {size} values")
