"""`samunet_strategies [-b vit_b] [-k 2]`: every strategy with its trainable and total parameter counts."""
import argparse

import torch

from samunet.errors import cli_entry
from samunet.models.backbones import BUILDERS, VIT_CONFIGS
from samunet.models.build import build_model, parameter_counts
from samunet.models.strategies import STRATEGIES


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="List fine-tuning strategies with parameter counts.")
    parser.add_argument("-b", "--backbone", default="vit_b", choices=sorted(BUILDERS))
    parser.add_argument("-k", "--num-classes", type=int, default=2, help="foreground classes (default 2)")
    parser.add_argument("--input-size", type=int, default=None)
    args = parser.parse_args(argv)
    print(f"backbone {args.backbone}, {args.num_classes} foreground classes")
    print(f"{'strategy':<16}{'trainable':>14}{'total':>14}{'%':>8}  what is trained")
    # Counting needs shapes only: ViTs are built on the meta device (no memory); TinyViT's constructor
    # reads values, but it is small.
    device = "meta" if args.backbone in VIT_CONFIGS else "cpu"
    for name, strategy in STRATEGIES.items():
        with torch.device(device):
            model = build_model(args.backbone, name, args.num_classes, args.input_size, weights=False)
        trainable, total = parameter_counts(model)
        print(f"{name:<16}{trainable:>14,}{total:>14,}{100 * trainable / total:>7.2f}%  {strategy.summary}")
