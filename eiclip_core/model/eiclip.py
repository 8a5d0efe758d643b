"""EI-CLIP (METHOD.md sections 3 to 8): a CLIP backbone plus the backdoor intervention on its text feature.

    h   = f_T(x)                                    backbone text feature, before L2 normalisation
    a_t = softmax_i((W_q h)^T (W_k K_t[i]) / sqrt(d_k) + log P_t(z_i))   section 4 (NWGM)
    c_t = sum_i a_t[i] W_v K_t[i]                   K_t = D_t (frozen) or normalise(E_t) with the EALM
    g   = sigmoid(W_s h + b_s)                      section 5 (CESM; hard Gumbel top-k / g = 1 switches)
    h'  = h + W_o sum_t g_t c_t                     W_o = 0 at init: step 0 is exactly the backbone
    L   = L_itc(normalise(v), normalise(h')) + lambda_ent L_ent     sections 6 and 7

Every switch is a field of `EIConfig` and the rows of the section-8 ablation table are `ROWS`, its values
(both in eiclip_core.model.config), not code forks.
Layout after x-clip: helpers, building blocks, the main class, the dictionaries.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from eiclip_core.model.config import EIConfig
from eiclip_core.model.dictionary_cache import remembered_dictionaries
from eiclip_core.errors import KitError

# --------------------------------------------------------------------------------------------- helpers


def l2norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def _key(t: str) -> str:
    """Entity type names as module keys (ModuleDict keys may not contain dots)."""
    return t.replace(".", "_")


# ------------------------------------------------------------------------------------- building blocks


class EntitySelection(nn.Module):
    """CESM gates g in (0,1)^|T| (METHOD.md section 5): which types to intervene on, per sample."""

    def __init__(self, dim: int, n_types: int, cfg: EIConfig):
        super().__init__()
        self.mode, self.top_k, self.tau = cfg.selection, min(cfg.top_k, n_types), cfg.gumbel_tau
        self.n_types = n_types
        self.proj = nn.Linear(dim, n_types) if self.mode != "all" else None  # W_s, b_s

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, |T|)
        if self.mode == "all":  # ablation: g = 1
            return h.new_ones(h.shape[0], self.n_types)
        logits = self.proj(h)
        if self.mode == "soft":
            return torch.sigmoid(logits)
        # hard Gumbel-sigmoid top-k, straight-through (Jang et al. 2017; Maddison et al. 2017):
        # forward uses the 0/1 top-k mask, backward the gradient of the relaxed sigmoid.
        if self.training:
            u = torch.rand_like(logits).clamp_(1e-6, 1 - 1e-6)
            logits = logits + torch.log(u) - torch.log1p(-u)  # logistic = difference of two Gumbels
        soft = torch.sigmoid(logits / self.tau)
        hard = torch.zeros_like(soft).scatter_(1, logits.topk(self.top_k, dim=1).indices, 1.0)
        return hard - soft.detach() + soft


class BackdoorIntervention(nn.Module):
    """Prior-weighted attention over each type's confounder keys and the gated residual (sections 4-5)."""

    def __init__(self, dim: int, types: list, cfg: EIConfig):
        super().__init__()
        self.types = types
        self.scale = cfg.attn_dim ** -0.5
        self.to_q = nn.Linear(dim, cfg.attn_dim, bias=False)  # W_q
        self.to_k = nn.Linear(dim, cfg.attn_dim, bias=False)  # W_k
        self.to_v = nn.Linear(dim, dim, bias=False)  # W_v
        self.select = EntitySelection(dim, len(types), cfg)
        self.to_out = nn.Linear(dim, dim, bias=False)  # W_o
        nn.init.zeros_(self.to_out.weight)  # section 5: step 0 == backbone, exactly

    def attend(self, h: torch.Tensor, keys: dict, log_prior: dict):
        """h (B, d), keys[t] (|V_t|, d), log_prior[t] (|V_t|,) -> c (B, |T|, d), a {t: (B, |V_t|)}."""
        q = self.to_q(h)  # (B, d_k)
        contexts, attention = [], {}
        for t in self.types:
            k = self.to_k(keys[t])  # (|V_t|, d_k)
            a = (q @ k.T * self.scale + log_prior[t]).softmax(dim=-1)  # (B, |V_t|)
            contexts.append(a @ self.to_v(keys[t]))  # (B, d)
            attention[t] = a
        return torch.stack(contexts, dim=1), attention

    def forward(self, h: torch.Tensor, keys: dict, log_prior: dict, explain: bool = False):
        c, attention = self.attend(h, keys, log_prior)  # (B, |T|, d)
        g = self.select(h).to(c.dtype)  # (B, |T|)
        out = h + self.to_out((g.unsqueeze(-1) * c).sum(dim=1))  # h' (B, d)
        return (out, g, attention) if explain else out


# ---------------------------------------------------------------------------------------- main class


class EICLIP(nn.Module):
    """A CLIP backbone with the EI-CLIP intervention (text side by default) and the EALM.

    `dictionaries[t]` is D_t (|V_t|, d), frozen; `entity_embeddings[t]` is E_t (learnable, from D_t) when
    the EALM is on. Encoders return L2-normalised (B, d) features and need no entity ids at test time.
    """

    def __init__(self, clip: nn.Module, dictionaries: dict, priors: dict, cfg: EIConfig):
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.types = list(dictionaries)
        self.type_keys = [_key(t) for t in self.types]
        dim = next(iter(dictionaries.values())).shape[1] if dictionaries else 0
        if (cfg.intervention or cfg.ealm) and not self.types:
            raise KitError("model config: the intervention and the EALM need at least one entity type")
        # D_t and log P_t are part of the run (stored in every checkpoint) but never trained.
        self.dictionaries = nn.ParameterDict(
            {_key(t): nn.Parameter(l2norm(d.float()), requires_grad=False) for t, d in dictionaries.items()})
        self.log_prior = nn.ParameterDict(
            {_key(t): nn.Parameter(torch.as_tensor(p, dtype=torch.float32).clamp_min(1e-12).log(),
                                   requires_grad=False) for t, p in priors.items()})
        self.entity_embeddings = None
        if cfg.ealm:  # section 6: E_t initialised from D_t, per-type heads u_t, learnable tau_e
            self.entity_embeddings = nn.ParameterDict(
                {k: nn.Parameter(d.detach().clone()) for k, d in self.dictionaries.items()})
            self.entity_heads = nn.ModuleDict({k: nn.Linear(dim, dim) for k in self.type_keys})
            self.entity_logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.tau_e)))
        self.intervention = BackdoorIntervention(dim, self.type_keys, cfg) if cfg.intervention else None

    @classmethod
    def from_state_dict(cls, clip: nn.Module, state: dict, types: list, cfg: EIConfig) -> "EICLIP":
        """Rebuild a trained model: D_t and P_t come from the stored state, so their shapes match."""
        dictionaries = {t: state[f"dictionaries.{_key(t)}"] for t in types}
        priors = {t: state[f"log_prior.{_key(t)}"].exp() for t in types}
        model = cls(clip, dictionaries, priors, cfg)
        model.load_state_dict(state)
        return model

    # keys the CESM attends over: rectified E_t with the EALM, else the frozen D_t (section 6)
    def _keys(self) -> dict:
        if self.entity_embeddings is not None:
            return {k: l2norm(e) for k, e in self.entity_embeddings.items()}
        return dict(self.dictionaries.items())

    def _intervene(self, x: torch.Tensor, side: str) -> torch.Tensor:
        if self.intervention is None or self.cfg.side != side:
            return x
        return self.intervention(x, self._keys(), dict(self.log_prior.items()))

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def image_features(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, d), unnormalised
        return self._intervene(self.clip.encode_image(images), "image")

    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, d), unnormalised h'
        return self._intervene(self.clip.encode_text(tokens), "text")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return l2norm(self.image_features(images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return l2norm(self.text_features(tokens))

    @torch.no_grad()
    def explain_text(self, tokens: torch.Tensor) -> dict:
        """Gates (B, |T|) and attention {type: (B, |V_t|)} of the text-side intervention (notebook 05)."""
        if self.intervention is None:
            raise KitError("explain_text: this model has no intervention (row without CESM)")
        h = self.clip.encode_text(tokens)
        _, g, attention = self.intervention(h, self._keys(), dict(self.log_prior.items()), explain=True)
        return {"gates": g, "attention": {t: attention[k] for t, k in zip(self.types, self.type_keys)}}

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        """Training forward: normalised features, the logit scale and (with the EALM) the entity logits,
        a list over `types` of (B, |V_t|).

        The loss (eiclip_core.model.loss.EICLIPLoss) turns these into L_itc and L_ent; the model never sees
        entity labels or the world size.
        """
        v = self.image_features(images)
        out = {"image_features": l2norm(v), "text_features": l2norm(self.text_features(tokens)),
               "logit_scale": self.clip.logit_scale.exp()}
        if self.entity_embeddings is not None:
            image, scale = out["image_features"], self.entity_logit_scale.exp()
            # u_t(v) . normalise(E_t)^T / tau_e (section 6), each (B, |V_t|)
            out["entity_logits"] = [self.entity_heads[k](image) @ l2norm(self.entity_embeddings[k]).T * scale
                                    for k in self.type_keys]
        return out

    @torch.no_grad()
    def clamp_scales(self) -> None:
        """Clamp the logit scales to [0, ln 100] after each step, as CLIP does (open_clip_train)."""
        self.clip.logit_scale.clamp_(0, math.log(100))
        if self.entity_embeddings is not None:
            self.entity_logit_scale.clamp_(0, math.log(100))


# --------------------------------------------------------------------------------------- dictionaries


def prompt_texts(entity_type: str, values: list, prompt: str) -> list:
    """prompt_t(v) of METHOD.md section 3: the bare value, or "{type}: {value}"."""
    return list(values) if prompt == "bare" else [f"{entity_type}: {v}" for v in values]


@torch.no_grad()
def build_dictionaries(clip: nn.Module, tokenizer, types: list, values: dict, prompt: str = "bare",
                       batch_size: int = 256) -> dict:
    """D_t[i] = normalise(f_T^0(prompt_t(v_i))) from the text tower as loaded (section 3), no grad.

    Computed in eval mode (no dropout) and in fp32 on the model's device; returns {t: (|V_t|, d)}.
    Remembered for the same text tower and token ids (eiclip_core.model.dictionary_cache), so runs made
    one after the other on the same data encode the values once.
    """
    tokens = {t: tokenizer(prompt_texts(t, values[t], prompt)) for t in types}
    return remembered_dictionaries(clip, tokens, lambda: _encode_dictionaries(clip, tokens, batch_size))


def _encode_dictionaries(clip: nn.Module, tokens: dict, batch_size: int) -> dict:
    was_training = clip.training
    clip.eval()
    device = next(clip.parameters()).device
    out = {}
    try:
        for t, ids in tokens.items():
            chunks = [clip.encode_text(ids[i:i + batch_size].to(device)) for i in range(0, len(ids), batch_size)]
            out[t] = l2norm(torch.cat(chunks).float())
    finally:
        clip.train(was_training)
    return out


def build_eiclip(backbone, artifact, cfg: EIConfig) -> EICLIP:
    """EI-CLIP on a freshly loaded backbone and an entity artifact (types, values, priors)."""
    types = list(artifact.types)
    dictionaries = build_dictionaries(backbone.model, backbone.tokenizer, types, artifact.values, cfg.prompt)
    priors = {t: torch.as_tensor(artifact.prior[t], dtype=torch.float32) for t in types}
    device = next(backbone.model.parameters()).device
    return EICLIP(backbone.model, dictionaries, priors, cfg).to(device)
