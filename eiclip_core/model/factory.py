"""Models ready for inference: a finished run rebuilt from its final.pt, or the untrained backbone.

Evaluation, figures and the sweep load models here; none of them imports the trainer.
"""
from pathlib import Path

from eiclip_core.model.backbone import load_backbone
from eiclip_core.model.checkpoint import load_checkpoint
from eiclip_core.model.config import DEFAULT_BACKBONE, EIConfig, TrainConfig, get_row
from eiclip_core.errors import KitError
from eiclip_core.model.eiclip import EICLIP, build_eiclip


def load_run(run_dir, device="cpu"):
    """(EICLIP, Backbone, TrainConfig) of a finished run, from its final.pt (weights_only load)."""
    path = Path(run_dir) / "final.pt"
    payload = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("config", "ei_config", "model", "types") if k not in payload]
    if missing:  # a readable eiclip checkpoint of another kind (a resume point copied over it, say)
        raise KitError(f"{path}: not a run's trained model (no {', '.join(missing)})")
    cfg = TrainConfig.from_dict(payload["config"], where=str(path))
    ei_cfg = EIConfig.from_dict(payload["ei_config"], where=str(path))
    backbone = load_backbone(cfg.backbone, cfg.pretrained, device="cpu", seed=cfg.seed)
    model = EICLIP.from_state_dict(backbone.model, payload["model"], list(payload["types"]), ei_cfg)
    return model.to(device).eval(), backbone, cfg


def zero_shot(backbone_name: str = DEFAULT_BACKBONE, pretrained: str = "", entities_path=None, device="cpu",
              seed: int = 0):
    """(EICLIP at step 0, Backbone): the full EI-CLIP config untrained, i.e. exactly the backbone."""
    from eiclip_core.entities import load_artifact

    if entities_path is None:
        raise KitError("zero_shot: entities_path is required (the dictionaries D_t come from it)")
    backbone = load_backbone(backbone_name, pretrained, device=device, seed=seed)
    model = build_eiclip(backbone, load_artifact(entities_path), get_row("ei-clip"))
    return model.eval(), backbone
