"""The EI-CLIP objective (METHOD.md section 7): L = L_itc + lambda_ent * L_ent.

L_itc is open_clip's own ClipLoss (symmetric InfoNCE, features gathered across ranks under torchrun);
L_ent (section 6) is written so that, under data parallelism, the mean of the per-rank losses is the
loss of the global batch, which keeps one process and N processes on the same global batch equal.
"""
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from eiclip_core.errors import KitError


def entity_loss(logits: list, value_ids: torch.Tensor, world_size: int = 1) -> torch.Tensor:
    """mean_t CE(logits[t], y_t), skipping missing values (-1) and types with no value in the global batch.

    logits: list over types of (B, |V_t|); value_ids: (B, |T|) int64. With world_size > 1 each rank's
    sum is divided by the *global* count of valid labels (times world_size), so averaging the ranks'
    losses (and DDP's averaging of their gradients) gives exactly the single-process loss.
    """
    counts = (value_ids >= 0).sum(dim=0).to(logits[0].dtype)  # (|T|,) valid labels on this rank
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(counts)  # global counts; no gradient flows through counts
        counts = counts / world_size
    per_type = []
    for t, lg in enumerate(logits):
        if counts[t] > 0:
            total = F.cross_entropy(lg.float(), value_ids[:, t], ignore_index=-1, reduction="sum")
            per_type.append(total / counts[t])
    if not per_type:
        return logits[0].sum() * 0.0  # keeps the graph (DDP) while contributing nothing
    return torch.stack(per_type).mean()


class EICLIPLoss(nn.Module):
    """The total loss from the model's forward output and the batch's value ids (section 7).

    Everything distributed about the objective lives here, as in open_clip: ClipLoss gathers the
    features across ranks and L_ent divides by the global count of valid labels, so the model never
    sees the world size. Returns loss, loss_itc and loss_ent (zero for rows without the EALM).
    """

    def __init__(self, lambda_ent: float = 0.5, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.lambda_ent = lambda_ent
        self.world_size = world_size
        # local_loss + gather_with_grad: each rank scores its rows against all gathered columns; the
        # ranks' mean equals the global loss, and gradients reach every rank's features.
        self.itc = ClipLoss(local_loss=world_size > 1, gather_with_grad=world_size > 1, cache_labels=True,
                            rank=rank, world_size=world_size)

    def forward(self, out: dict, value_ids: Optional[torch.Tensor] = None) -> dict:
        """out: EICLIP.forward's dict; value_ids (B, |T|) int64, -1 = missing, columns in `model.types`."""
        entity_logits = out.get("entity_logits")
        loss_ent = None
        if entity_logits is not None:
            if value_ids is None:
                raise KitError("EICLIPLoss: this row has the EALM, whose L_ent needs the batch's value ids")
            # L_ent before L_itc: autograd sums gradients in the order the terms are added, and this order
            # is the one the committed runs were made with, so they stay bit-identical
            loss_ent = entity_loss(entity_logits, value_ids, world_size=self.world_size)
        loss_itc = self.itc(out["image_features"], out["text_features"], out["logit_scale"])
        if loss_ent is None:
            return {"loss": loss_itc, "loss_itc": loss_itc, "loss_ent": torch.zeros_like(loss_itc)}
        return {"loss": loss_itc + self.lambda_ent * loss_ent, "loss_itc": loss_itc, "loss_ent": loss_ent}
