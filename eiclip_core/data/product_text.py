"""The text a product is seen through, and the one normalisation of entity values.

Both the generator's ground truth and the entity miner use these, so mention offsets and
vocabulary values agree by construction.
"""
import re

_PUNCT_EDGES = re.compile(r"^[\s\W_]+|[\s\W_]+$")
_SPACES = re.compile(r"\s+")


def product_text(name: str, description: str) -> str:
    """x_p = name + ". " + description (METHOD.md section 2); either part may be empty or missing."""
    name = name.strip() if isinstance(name, str) else ""
    description = description.strip() if isinstance(description, str) else ""
    if name and description:
        return f"{name.rstrip('.')}. {description}"
    return name or description


def normalise_value(value) -> str:
    """Canonical form of an entity value: lower case, single spaces, no punctuation at the edges.

    "  Canada  Goose. " -> "canada goose"; "T-Shirts" -> "t-shirts" (inner punctuation is kept).
    Non-strings and empty values give "".
    """
    if not isinstance(value, str):
        return ""
    return _SPACES.sub(" ", _PUNCT_EDGES.sub("", value)).lower()
