"""Masked-image-modelling objectives, one module each, chosen by the encoder's architecture:

- `mae` (plain ViTs: vit_b/l/h, tiny): the encoder sees only the visible patches (objectives/visible_tokens.py
  runs SAM's windowed blocks on them), a small transformer decoder predicts the masked patches, loss on
  per-patch normalised pixels of the masked patches (MAE).
- `simmim` (TinyViT: litemedsam, mobile_sam, whose convolutions and windows need the whole grid): a
  learned mask token replaces masked regions after the patch embedding, a 1x1 convolution + pixel shuffle
  predicts the pixels, L1 loss on masked pixels (SimMIM).

Each objective is an nn.Module holding the encoder: `forward(images, masks) -> loss`, `reconstruct(images,
masks) -> images` (for pictures), `grid` (mask cells per side), `default_mask_ratio` and
`unused_encoder_parts` (encoder parameter prefixes the loss never reaches).
"""
from samunet.models.backbone_registry import BACKBONES
from samunet.pretraining.objectives.mae import MaskedAutoencoder
from samunet.pretraining.objectives.simmim import SimMIM

OBJECTIVES = {"mae": MaskedAutoencoder, "simmim": SimMIM}


def build_objective(backbone, encoder, input_size):
    """The objective the backbone registry names for `backbone`, around its `encoder`."""
    return OBJECTIVES[BACKBONES[backbone].pretraining_objective](encoder, input_size)
