"""The confounder dictionaries D_t of the last few text towers, so runs made one after the other encode them once.

D_t (METHOD.md section 3, eiclip_core.model.eiclip.build_dictionaries) is the frozen text tower on
the prompted entity values. Runs trained or scored one after the other on the same data (notebook 03,
the sweep) start from the same tower and the same values, so the result is remembered under a digest
of exactly what decides it: the state-dict entries `encode_text` reads and the token ids. The image
tower and the logit scale are left out of the key: `encode_text` never reads them, so a backbone whose
image tower differs (another seed of the random one, a fine-tuned one) reuses the entry.
"""
from typing import Callable

from torch import nn

from eiclip_core.model.checkpoint import checksum

# State-dict entries `encode_text` never reads, in open_clip's CLIP and CustomTextCLIP: the image
# tower and the logit scale and bias. The text tower is every other entry: CustomTextCLIP keeps it
# under `text.` (transformer, pooler, projection); CLIP at the top level (token_embedding,
# positional_embedding, transformer, ln_final, text_projection). A model with other parts keeps them
# in the key: an entry is then reused less often, never wrongly.
NOT_TEXT_TOWER = ("visual.", "logit_scale", "logit_bias")
SIZE = 4  # dictionaries remembered at once, the oldest dropped first

_remembered: dict = {}  # digest of (text tower, token ids) -> {t: D_t}


def text_tower_state(clip: nn.Module) -> dict:
    """The entries of clip's state dict that `clip.encode_text` reads (see NOT_TEXT_TOWER)."""
    return {k: v for k, v in clip.state_dict().items() if not k.startswith(NOT_TEXT_TOWER)}


def remembered_dictionaries(clip: nn.Module, tokens: dict, encode: Callable[[], dict]) -> dict:
    """{t: D_t} of these token ids ({t: (|V_t|, L) ids}) under clip's text tower: `encode()` the first
    time, remembered after. Each call returns its own copies, so a caller may change them."""
    key = checksum({"text_tower": text_tower_state(clip), "tokens": tokens})
    if key not in _remembered:
        _remembered[key] = encode()
        while len(_remembered) > SIZE:
            del _remembered[next(iter(_remembered))]  # the oldest (dicts keep insertion order)
    return {t: d.clone() for t, d in _remembered[key].items()}
