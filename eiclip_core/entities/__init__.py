"""Entities: the confounders of METHOD.md sections 1 and 3, mined from Fashion-Gen products.

    vocab.py     vocabularies, priors, the "other" bucket, composition parsing, prone flags
    miner.py     EntityMiner: spaCy PhraseMatcher (known values) + Matcher (fit) over texts
    artifact.py  EntityArtifact / load_artifact: the versioned JSON file training reads
    mine.py      mine_dataset and the `eiclip mine` command
"""
from eiclip_core.entities.artifact import ARTIFACT_VERSION, OTHER, EntityArtifact, load_artifact, write_artifact
from eiclip_core.entities.miner import FIT_WORDS, EntityMiner
from eiclip_core.entities.mine import mine_dataset, mine_products
from eiclip_core.entities.vocab import (ALL_TYPES, MODEL_TYPES, Composition, backbone_tokenizer,
                                        build_vocabulary, parse_composition, prone_flags)

__all__ = ["ARTIFACT_VERSION", "OTHER", "EntityArtifact", "load_artifact", "write_artifact", "FIT_WORDS",
           "EntityMiner", "mine_dataset", "mine_products", "ALL_TYPES", "MODEL_TYPES", "Composition",
           "backbone_tokenizer", "build_vocabulary", "parse_composition", "prone_flags"]
