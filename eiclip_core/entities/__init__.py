"""Entities: the confounders of METHOD.md sections 1 and 3, mined from Fashion-Gen products.

    vocab.py     vocabularies, priors, the "other" bucket, composition parsing, prone flags
    miner.py     EntityMiner: spaCy PhraseMatcher (known values) + Matcher (fit) over texts
    artifact.py  EntityArtifact / load_artifact: the versioned JSON file training reads
    mine.py      mine_dataset and the `eiclip mine` command

The names below are imported on first use (PEP 562): reading an artifact, which every training,
evaluation and notebook kernel does, then does not pay for importing spaCy (a slow import, in every kernel).
"""
import importlib

_SOURCE = {
    "artifact": ("ARTIFACT_VERSION", "OTHER", "EntityArtifact", "load_artifact", "write_artifact"),
    "miner": ("FIT_WORDS", "EntityMiner"),
    "mine": ("mine_dataset", "mine_products"),
    "vocab": ("ALL_TYPES", "MODEL_TYPES", "Composition", "backbone_tokenizer", "build_vocabulary",
              "parse_composition", "prone_flags"),
}
_MODULE_OF = {name: module for module, names in _SOURCE.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
