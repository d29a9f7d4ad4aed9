"""SAM-Med2D's encoder adapter, so that its released weights load into segment_anything's ViT.

SAM-Med2D adds, beside the MLP of every ViT block, an adapter on the same normalised tokens:
a channel gate (average-pooled tokens -> bottleneck of a quarter of the width -> sigmoid) scales the
tokens, a stride-2 convolution and its transposed convolution mix them spatially, the result is added to
the tokens and layer-normalised; the block adds it to the MLP's output. Here the block's `mlp` is wrapped
so that it returns mlp(x) + adapter(x); the weights file names the adapter `blocks.N.Adapter.*` and the
MLP `blocks.N.mlp.*`, which `from_file_keys` maps onto this layout.
"""
import re

from torch import nn


class SamMed2dAdapter(nn.Module):
    def __init__(self, dim, ratio=0.25):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm = nn.LayerNorm(dim)
        self.channel = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, dim, bias=False), nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(dim, dim, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                                     nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1, bias=False), nn.ReLU())

    def forward(self, x):  # (B, H, W, C) tokens
        gate = self.channel(x.mean(dim=(1, 2)))  # (B, C)
        gated = (x * gate[:, None, None, :]).permute(0, 3, 1, 2)
        mixed = self.spatial(gated).permute(0, 2, 3, 1)
        return self.norm(x + mixed)


class MlpWithSamMed2dAdapter(nn.Module):
    def __init__(self, mlp, dim):
        super().__init__()
        self.mlp = mlp
        self.adapter = SamMed2dAdapter(dim)

    def forward(self, x):
        return self.mlp(x) + self.adapter(x)


def add_sam_med2d_adapters(encoder):
    for block in encoder.blocks:
        block.mlp = MlpWithSamMed2dAdapter(block.mlp, block.attn.proj.out_features)


_BLOCK_KEY = re.compile(r"^(blocks\.\d+)\.(Adapter|mlp)\.(.*)$")


def from_file_keys(state):
    """An image-encoder state dict in SAM-Med2D's names -> this module layout's."""
    out = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            block, part, rest = match.groups()
            key = f"{block}.mlp.{'adapter' if part == 'Adapter' else 'mlp'}.{rest}"
        out[key] = value
    return out


def has_sam_med2d_adapters(encoder_state):
    return any(".Adapter." in k for k in encoder_state)


def to_file_keys(state):
    """The inverse of from_file_keys (tests write files in SAM-Med2D's names with it)."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(blocks\.\d+)\.mlp\.adapter\.", r"\1.Adapter.", key)
        key = re.sub(r"^(blocks\.\d+)\.mlp\.mlp\.", r"\1.mlp.", key)
        out[key] = value
    return out

