"""`samunet_strategies [-b vit_b] [-k 2] [--checkpoint FILE [--input-normalization sam|unit]]`: every strategy
with its trainable and total parameter counts; with --checkpoint, first load and verify a weights file for
the backbone (its variant, sha256, and the input normalisation the backbone will use)."""
import argparse

import torch

from samunet.errors import cli_entry
from samunet.models.backbone_registry import BACKBONES, NORMALIZATIONS
from samunet.models.backbones import VARIANT_WORDS, build_backbone
from samunet.models.build import build_model, parameter_counts
from samunet.models.strategies import STRATEGIES


def describe_weights(backbone, checkpoint, normalization=None):
    """Load `checkpoint` as `backbone` (strictly: a wrong variant or shape is a one-line error); lines to print."""
    spec = BACKBONES[backbone]
    parts = build_backbone(backbone, checkpoint=checkpoint)
    variant = parts.weights_variant
    used = NORMALIZATIONS[normalization] if normalization else spec.default_normalization
    origin = "--input-normalization" if normalization else f"{backbone}'s default"
    return [f"weights {checkpoint}: {VARIANT_WORDS.get(variant, variant)}, loads as backbone {backbone} "
            f"({spec.description})",
            f"  sha256 {parts.base_weights}",
            f"  input size {parts.input_size} (native {spec.native_input_size})",
            f"  input normalisation ({origin}) {used.describe()}"]


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="List fine-tuning strategies with parameter counts; check a "
                                                 "weights file with --checkpoint.")
    parser.add_argument("-b", "--backbone", default="vit_b", choices=list(BACKBONES))
    parser.add_argument("-k", "--num-classes", type=int, default=2, help="foreground classes (default 2)")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--checkpoint", default=None, help="a weights file to load and verify for the backbone")
    parser.add_argument("--input-normalization", choices=list(NORMALIZATIONS), default=None,
                        help="with --checkpoint: the normalisation samunet_train would be given")
    args = parser.parse_args(argv)
    if args.checkpoint:
        print("\n".join(describe_weights(args.backbone, args.checkpoint, args.input_normalization)))
    print(f"backbone {args.backbone}, {args.num_classes} foreground classes")
    print(f"{'strategy':<16}{'trainable':>14}{'total':>14}{'%':>8}  what is trained")
    # Counting needs shapes only: ViTs are built on the meta device (no memory); TinyViT's constructor
    # reads values, but it is small.
    device = "meta" if BACKBONES[args.backbone].vit is not None else "cpu"
    for name, strategy in STRATEGIES.items():
        with torch.device(device):
            model = build_model(args.backbone, name, args.num_classes, args.input_size, weights=False)
        trainable, total = parameter_counts(model)
        print(f"{name:<16}{trainable:>14,}{total:>14,}{100 * trainable / total:>7.2f}%  {strategy.summary}")
