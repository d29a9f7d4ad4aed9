"""build_model: backbone + strategy + number of classes -> SamSegmenter with exactly the declared
parameters trainable."""
from dataclasses import asdict, dataclass

import torch

from samunet import __version__
from samunet.errors import SamunetError
from samunet.models.adapters import add_decoder_adapters, add_encoder_adapters
from samunet.models.backbone_registry import BACKBONES, normalization_from_fields
from samunet.models.backbones import build_backbone
from samunet.models.heads import HEADS
from samunet.models.lora import add_lora
from samunet.models.pretrained_encoder import METADATA_KEY as PRETRAINED_KEY, apply_pretrained_encoder
from samunet.models.segmenter import SamSegmenter
from samunet.models.slice_fusion import SliceFusion
from samunet.models.strategies import get_strategy

PROMPTS_KEY = "prompts"  # in model metadata: how a prompted model was trained (kind, jitter, negatives)
FUSED_SLICES_KEY = "fused_slices"  # in model metadata: neighbours each side whose embeddings the head fuses
CHANNEL_VIEWS_KEY = "channel_views"  # in model metadata: encoder images per slice (channels encoded separately)
ENCODER_LORA_TARGETS = {"qkv"}
DECODER_LORA_TARGETS = {"q_proj", "v_proj"}


@dataclass(frozen=True)
class PeftConfig:
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    adapter_ratio: float = 0.25


def _selected(mode, relative_name, class_specific):
    if mode == "full":
        return True
    if mode == "lora":
        return ".lora_" in relative_name or relative_name.startswith(class_specific)
    if mode == "adapter":
        return ".adapter." in relative_name or relative_name.startswith(class_specific)
    return False


def trainable_parameter_names(model, strategy):
    head = model.head
    names = set()
    for name, _ in model.named_parameters():
        if name.startswith("fusion."):  # new, like a head's class tokens: trained by every strategy
            names.add(name)
        elif name.startswith("encoder."):
            if _selected(strategy.encoder, name, ()):
                names.add(name)
        elif name.startswith("head."):
            rel = name[len("head."):]
            if rel.startswith("prompt_encoder.") or rel.startswith(head.always_frozen):
                continue
            if _selected(strategy.decoder, rel, head.class_specific):
                names.add(name)
    return names


def build_model(backbone, strategy, num_classes, input_size=None, checkpoint=None, class_names=None,
                peft=PeftConfig(), weights=True, seed=0, pretrained_encoder=None, pretrained_sha256=None, prompts=None,
                normalization=None, fused_slices=0, channel_views=1):
    """A SamSegmenter on `backbone` (weights from `checkpoint` or the registry's default) tuned as
    `strategy` declares, with K = num_classes foreground classes. weights=False: architecture only.
    `pretrained_encoder`: a samunet_pretrain output folder whose encoder replaces the backbone's (its file
    must hash to `pretrained_sha256` when given). `prompts`: the prompt rule of a prompted model
    (prompts/derivation.py PromptRule as a dict), recorded in its metadata. New parameters (heads, LoRA,
    adapters) are initialised from `seed`, whatever the global RNG state. `normalization`: the encoder
    input's {input_range, pixel_mean, pixel_std} (the plan's, or --input-normalization's); default the
    backbone's own (models/backbone_registry.py). `fused_slices` n > 0: the head fuses the embeddings of
    slices z - n .. z + n, `channel_views` > 1 the embeddings of each channel (models/slice_fusion.py)."""
    strategy = get_strategy(strategy)
    head_class = HEADS[strategy.head]
    if prompts and not head_class.uses_prompts:
        raise SamunetError(f"strategy {strategy.name}: its {strategy.head} head takes no prompts; prompted training "
                           f"needs a strategy with the sam_decoder head")
    parts = build_backbone(backbone, input_size, checkpoint, weights=weights)
    normalization = (normalization_from_fields(normalization) if normalization
                     else BACKBONES[backbone].default_normalization)
    pretrained = None
    if pretrained_encoder is not None:
        pretrained = apply_pretrained_encoder(parts, pretrained_encoder, pretrained_sha256, normalization.fields())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = head_class(parts, num_classes, prompted=True) if prompts else head_class(parts, num_classes)
        fused = fused_slices or channel_views > 1
        fusion = SliceFusion(parts.embed_dim, fused_slices, channel_views) if fused else None
        if strategy.encoder == "lora":
            add_lora(parts.image_encoder, ENCODER_LORA_TARGETS, peft.lora_rank, peft.lora_alpha, peft.lora_dropout)
        elif strategy.encoder == "adapter":
            add_encoder_adapters(parts.image_encoder, peft.adapter_ratio)
        if strategy.decoder == "lora":
            add_lora(head.decoder.transformer, DECODER_LORA_TARGETS, peft.lora_rank, peft.lora_alpha,
                     peft.lora_dropout)
        elif strategy.decoder == "adapter":
            add_decoder_adapters(head.decoder.transformer, peft.adapter_ratio)
    metadata = {
        "samunet_version": __version__,
        "backbone": backbone,
        "strategy": strategy.name,
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names else [f"class_{i}" for i in range(1, num_classes + 1)],
        "input_size": parts.input_size,
        "base_weights": parts.base_weights,
        "peft": asdict(peft),
        FUSED_SLICES_KEY: fused_slices,
        CHANNEL_VIEWS_KEY: channel_views,
        **normalization.fields(),
    }
    if pretrained:
        metadata[PRETRAINED_KEY] = pretrained
    if prompts:
        metadata[PROMPTS_KEY] = dict(prompts)
    model = SamSegmenter(parts.image_encoder, head, parts.input_size, normalization.pixel_mean, normalization.pixel_std,
                         strategy.encoder_frozen, metadata, fusion)
    trainable = trainable_parameter_names(model, strategy)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return model


def parameter_counts(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
