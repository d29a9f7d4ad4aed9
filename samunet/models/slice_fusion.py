"""Fusion in the head of several embeddings per slice: of its neighbours (3D context, the plan's
`fused_slices`) and of its channels when each is encoded alone (`channel_encoding` "separate").

The encoder sees each slice (and channel) alone, as a grey image like those it was pretrained on
(neighbouring slices or channels as SAM's input channels lost accuracy: docs/benchmarks.md), so
frozen-encoder strategies keep their embedding cache; the head then gets, per image token, the mean of
the slice's own embeddings (one per view: channel) plus a learned linear mix of all embeddings of slices
z - n .. z + n. The mix starts at zero, so an untrained fusion of one view is the slice model.
"""
import torch
from torch import nn


class SliceFusion(nn.Module):
    def __init__(self, embed_dim, fused_slices, views=1):
        super().__init__()
        self.centre = slice(fused_slices * views, (fused_slices + 1) * views)
        depth = (2 * fused_slices + 1) * views
        self.mix = nn.Conv2d(embed_dim * depth, embed_dim, kernel_size=1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, embeddings):
        """(B, (2n + 1) * views, C, h, w) embeddings of slices z - n .. z + n (slice-major) -> (B, C, h, w)."""
        centre = embeddings[:, self.centre].mean(1)
        return centre + self.mix(embeddings.flatten(1, 2).to(self.mix.weight.dtype)).to(centre.dtype)


def neighbour_indices(index, fused_slices, num_slices):
    """Slices z - n .. z + n of slice `index`, volume edges replicated."""
    return [min(max(index + d, 0), num_slices - 1) for d in range(-fused_slices, fused_slices + 1)]


def gather_neighbours(embeddings, slices, fused_slices, num_slices):
    """{slice index: ([views,] C, h, w)} -> (len(slices), (2n + 1) * views, C, h, w), slice-major;
    (len(slices), [views,] C, h, w) when n is 0."""
    if not fused_slices:
        return torch.stack([embeddings[s] for s in slices])
    stacked = torch.stack([torch.stack([embeddings[i] for i in neighbour_indices(s, fused_slices, num_slices)])
                           for s in slices])
    return stacked.flatten(1, 2) if stacked.dim() == 6 else stacked
