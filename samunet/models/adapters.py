"""Bottleneck adapters (Medical SAM Adapter style), zero-initialised so the model starts as the base.

In each encoder block: one adapter on the attention output (x + up(gelu(down(x)))) and one in parallel
to the MLP (mlp(x) + s * adapter(x)). In the mask decoder's two-way transformer: the same pair around
each layer's token self-attention and MLP.
"""
from torch import nn


class Adapter(nn.Module):
    def __init__(self, dim, ratio=0.25):
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return self.up(self.act(self.down(x)))


class WithAdapterAfter(nn.Module):
    """module(...) followed by a residual adapter on its output."""

    def __init__(self, module, dim, ratio):
        super().__init__()
        self.module = module
        self.adapter = Adapter(dim, ratio)

    def forward(self, *args, **kwargs):
        y = self.module(*args, **kwargs)
        return y + self.adapter(y)


class WithParallelAdapter(nn.Module):
    """module(x) + scale * adapter(x)."""

    def __init__(self, module, dim, ratio, scale=0.5):
        super().__init__()
        self.module = module
        self.adapter = Adapter(dim, ratio)
        self.scale = scale

    def forward(self, x):
        return self.module(x) + self.scale * self.adapter(x)


def add_encoder_adapters(encoder, ratio):
    """Blocks with `.attn` (having a `.proj` output layer) and `.mlp`: SAM ViT blocks and TinyViT blocks."""
    count = 0
    for block in list(encoder.modules()):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        if attn is None or mlp is None or not hasattr(attn, "proj"):
            continue
        dim = attn.proj.out_features
        block.attn = WithAdapterAfter(attn, dim, ratio)
        block.mlp = WithParallelAdapter(mlp, dim, ratio)
        count += 1
    return count


def add_decoder_adapters(transformer, ratio):
    """Layers of segment_anything's TwoWayTransformer."""
    for layer in transformer.layers:
        dim = layer.self_attn.out_proj.out_features
        layer.self_attn = WithAdapterAfter(layer.self_attn, dim, ratio)
        layer.mlp = WithParallelAdapter(layer.mlp, dim, ratio)
    return len(transformer.layers)
