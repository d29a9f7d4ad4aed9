"""Random patch masks for masked-image modelling: the same number of masked cells in every sample."""
import torch
import torch.nn.functional as F


def random_patch_masks(batch_size, grid, ratio, generator=None):
    """(B, grid, grid) bool, True = masked; round(ratio * grid^2) cells per sample, at least 1, never all."""
    cells = grid * grid
    count = min(cells - 1, max(1, round(ratio * cells)))
    order = torch.rand(batch_size, cells, generator=generator).argsort(dim=1)
    masks = torch.zeros(batch_size, cells, dtype=torch.bool)
    masks.scatter_(1, order[:, :count], True)
    return masks.view(batch_size, grid, grid)


def pixel_mask(masks, size):
    """(B, grid, grid) cell masks -> (B, 1, size, size) float pixel masks."""
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")
