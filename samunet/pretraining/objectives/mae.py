"""MAE for SAM's plain ViT encoders (vit_b/l/h, tiny): He et al. 2022, as the fine-tuning study's SSL.

The encoder sees only the visible 16 x 16 patches (visible_tokens.py); a small transformer decoder gets
their features and a shared learned mask token at every masked position, with fixed 2D sine-cosine
positions, and predicts each masked patch's pixels. The loss is the mean squared error on masked patches
of per-patch normalised pixels (MAE's norm_pix_loss). SAM's neck (convolutions over the whole grid)
gets no gradient: fine-tuning receives it as it was.
"""
import torch
from torch import nn

from samunet.pretraining.objectives.visible_tokens import encode_visible

PATCH = 16
DECODER_DEPTH = 2
DECODER_HEADS = 4


def sincos_positions(grid, dim):
    """(grid * grid, dim) fixed 2D sine-cosine position embedding (half the channels per axis)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                                indexing="ij")
    parts = []
    for pos in (rows.flatten(), cols.flatten()):
        angles = pos[:, None] * freq[None]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1]))


def patchify(images):
    """(B, 3, S, S) -> (B, (S/16)^2, 16 * 16 * 3), patches in row-major grid order."""
    b, c, s, _ = images.shape
    g = s // PATCH
    x = images.reshape(b, c, g, PATCH, g, PATCH).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, g * g, PATCH * PATCH * c)


def unpatchify(patches, channels=3):
    b, n, _ = patches.shape
    g = int(round(n ** 0.5))
    x = patches.reshape(b, g, g, PATCH, PATCH, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, g * PATCH, g * PATCH)


class MaskedAutoencoder(nn.Module):
    default_mask_ratio = 0.75  # MAE's
    unused_encoder_parts = ("neck.",)  # never in the loss: kept out of the optimiser (and of DDP's reduction)

    def __init__(self, encoder, input_size):
        super().__init__()
        self.encoder = encoder
        self.grid = input_size // PATCH
        width = encoder.pos_embed.shape[-1]
        dim = min(256, width)
        self.embed = nn.Linear(width, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("positions", sincos_positions(self.grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, DECODER_HEADS, 4 * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(DECODER_DEPTH))
        self.norm = nn.LayerNorm(dim)
        self.pixels = nn.Linear(dim, PATCH * PATCH * 3)

    def predict(self, images, masks):
        """Predicted patches (B, grid^2, 768): normalised pixels of every patch (masked ones matter)."""
        keep = ~masks.flatten(1)
        visible, index = encode_visible(self.encoder, images, keep)
        visible = self.embed(visible)
        tokens = self.mask_token.to(visible.dtype).expand(visible.shape[0], self.grid * self.grid, -1)
        tokens = tokens.scatter(1, index[:, :, None].expand(-1, -1, visible.shape[-1]), visible)
        x = tokens + self.positions.to(tokens.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pixels(self.norm(x))

    @staticmethod
    def _targets(images):
        patches = patchify(images.float())
        mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
        return (patches - mean) / (var + 1e-6).sqrt(), mean, var

    def forward(self, images, masks):
        prediction = self.predict(images, masks).float()
        targets, _, _ = self._targets(images)
        per_patch = ((prediction - targets) ** 2).mean(-1)
        m = masks.flatten(1).float()
        return (per_patch * m).sum() / m.sum().clamp_min(1)

    @torch.no_grad()
    def reconstruct(self, images, masks):
        """Visible patches as given, masked ones predicted (de-normalised with each patch's own statistics,
        as MAE's pictures are)."""
        _, mean, var = self._targets(images)
        predicted = self.predict(images, masks).float() * (var + 1e-6).sqrt() + mean
        m = masks.flatten(1)[:, :, None].float()
        return unpatchify(patchify(images.float()) * (1 - m) + predicted * m)
