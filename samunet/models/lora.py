"""Low-rank adaptation (LoRA) of nn.Linear layers: y = W x + (alpha / r) * B A x, with B zero at start.

Our own ~50 lines rather than peft: peft pulls in transformers and accelerate (hundreds of MB) for this
one wrapper, and samunet stores checkpoints as plain named tensors, which peft's save format would only
wrap. On SAM's fused `qkv` projection the update covers q, k and v together (as peft targeting 'qkv'
would); SAMed adapts q and v only.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base, rank=4, alpha=4.0, dropout=0.0):
        super().__init__()
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return self.base(x) + update * self.scaling

    def merged(self):
        """A plain nn.Linear computing the same function (dropout off)."""
        merged = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.scaling * (self.lora_b @ self.lora_a))
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged.to(self.base.weight.device, self.base.weight.dtype)


def add_lora(root, target_names, rank, alpha, dropout):
    """Wrap every nn.Linear child of `root` whose attribute name is in `target_names`. Returns the count."""
    targets = [
        (parent, name)
        for parent in root.modules()
        for name, child in parent.named_children()
        if name in target_names and isinstance(child, nn.Linear)
    ]
    for parent, name in targets:
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))
    return len(targets)


def merge_lora(root):
    """Replace every LoRALinear under `root` by its merged nn.Linear (for export)."""
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
