"""The two runs notebook 05 analyses, loaded once: CLIP-FT and EI-CLIP of one seed, with what they are
looked at with (the validation split, the entity artifact, the frozen text tower, cached embeddings).
Both are keyed by their row names (eiclip_core.protocols.BASELINE, METHOD)."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from eiclip_core import layout
from eiclip_core.analysis.measures import encode_texts
from eiclip_core.protocols import BASELINE, METHOD


@dataclass
class AnalysedRuns:
    """What notebook 05 looks at, loaded once: both runs, the frozen text tower, the validation split."""

    data: object  # eiclip_core.data.FashionGen of the validation split
    artifact: object  # eiclip_core.entities.EntityArtifact
    models: dict  # row name (BASELINE, METHOD) -> EICLIP in eval mode
    tokenizer: Callable
    frozen: Callable  # tokens -> (B, d) L2-normalised text features before fine-tuning (f_T^0)
    embeddings: dict  # row name -> eiclip_core.evaluation.embeddings.Embeddings of the validation split (cached)
    device: torch.device

    @property
    def texts(self) -> list:
        return self.data.products["text"].tolist()

    def labels(self, entity_type: str) -> list:
        """Validation products' values of a type; None when missing or in the "other" bucket."""
        values = self.artifact.values[entity_type]
        ids = self.artifact.value_ids("validation")[entity_type]
        return [values[i] if i >= 0 and values[i] != "other" else None for i in ids]

    def gallery(self, row: str) -> np.ndarray:
        """First-view image embeddings (N_products, d) of a model: the full protocol's gallery."""
        emb = self.embeddings[row]
        return emb.image[emb.first_view]

    def encoder(self, row: str) -> Callable:
        """texts -> (N, d) L2-normalised text features of a model."""
        model = self.models[row]
        return lambda texts: encode_texts(model.encode_text, self.tokenizer, texts, self.device)


def load_analysed_runs(data_dir, seed: int, device) -> AnalysedRuns:
    """Load the CLIP-FT and EI-CLIP runs of `seed` (notebook 03) and their cached validation embeddings
    (the cache notebook 04 fills; computed here when missing)."""
    from eiclip_core.model.backbone import load_backbone
    from eiclip_core.model.checkpoint import checkpoint_id
    from eiclip_core.data import FashionGen
    from eiclip_core.entities import load_artifact
    from eiclip_core.errors import KitError
    from eiclip_core.evaluation.embeddings import cached_embeddings
    from eiclip_core.model.factory import load_run

    validation = FashionGen(layout.split_file(data_dir, "validation"))
    models, embeddings = {}, {}
    for row in (BASELINE, METHOD):
        run = layout.run_dir(data_dir, row, seed)
        if not layout.run_finished(run):
            raise KitError(f"{run}: run not finished (no {' / '.join(layout.FINISHED_RUN_FILES)}); "
                           "train it with notebook 03")
        model, backbone, cfg = load_run(run, device)
        models[row] = model
        embeddings[row] = cached_embeddings(
            lambda m=model, b=backbone: (m, b), {"checkpoint": checkpoint_id(run / "final.pt")}, validation,
            layout.cache_dir(data_dir), device)
    # the text tower as loaded before fine-tuning (same seed = same projection as the run's D_t)
    frozen = load_backbone(cfg.backbone, cfg.pretrained, device=device, seed=cfg.seed).model.eval()
    return AnalysedRuns(data=validation, artifact=load_artifact(layout.entities_file(data_dir)),
                        models=models, tokenizer=backbone.tokenizer,
                        frozen=lambda tokens: torch.nn.functional.normalize(frozen.encode_text(tokens), dim=-1),
                        embeddings=embeddings, device=device)
