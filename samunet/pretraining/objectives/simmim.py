"""SimMIM for TinyViT encoders (litemedsam, mobile_sam): mask tokens at the input, pixels out.

TinyViT's convolutional first stage and its attention windows need the whole token grid, so masked
regions cannot be dropped (as MAE does); SimMIM (Xie et al. 2022) instead replaces them, right after
the patch embedding, by one learned mask token, runs the unchanged encoder, and predicts the raw pixels
from its output with a 1x1 convolution and a pixel shuffle. The loss is the L1 distance on masked
pixels only. The encoder's own forward runs untouched: a forward hook on the patch embedding swaps
the tokens in, so LoRA or adapters inside the encoder train as they would in fine-tuning.
"""
import torch
import torch.nn.functional as F
from torch import nn

from samunet.pretraining.masking import pixel_mask

MAX_CELL = 32  # SimMIM's mask patch size


def _last_conv(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1]


class SimMIM(nn.Module):
    default_mask_ratio = 0.6  # SimMIM's
    unused_encoder_parts = ()

    def __init__(self, encoder, input_size):
        super().__init__()
        self.encoder = encoder
        self.input_size = input_size
        self.stride = input_size // encoder.layers[-1].input_resolution[0]  # input pixels per output token
        # mask cells: at most 32 px, whole output tokens, and about 8 per side at small inputs
        cell = max(self.stride, min(MAX_CELL, input_size // 8) // self.stride * self.stride)
        self.grid = input_size // cell
        width = _last_conv(encoder.patch_embed).out_channels
        self.mask_token = nn.Parameter(torch.zeros(1, width, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Sequential(nn.Conv2d(_last_conv(encoder.neck).out_channels, 3 * self.stride ** 2, 1),
                                  nn.PixelShuffle(self.stride))
        self._masks = None
        encoder.patch_embed.register_forward_hook(self._insert_mask_tokens)

    def _insert_mask_tokens(self, module, inputs, output):
        if self._masks is None:
            return output
        m = F.interpolate(self._masks[:, None].to(output.dtype), size=output.shape[-2:], mode="nearest")
        return output * (1 - m) + self.mask_token.to(output.dtype) * m

    def predict(self, images, masks):
        """Predicted pixels (B, 3, S, S) of normalised `images` with `masks` (B, grid, grid) hidden."""
        self._masks = masks
        try:
            features = self.encoder(images)
        finally:
            self._masks = None
        return self.head(features)

    def forward(self, images, masks):
        prediction = self.predict(images, masks).float()
        m = pixel_mask(masks, self.input_size).to(images.device)
        return ((prediction - images).abs() * m).sum() / (m.sum() * images.shape[1]).clamp_min(1)

    @torch.no_grad()
    def reconstruct(self, images, masks):
        m = pixel_mask(masks, self.input_size).to(images.device)
        return images * (1 - m) + self.predict(images, masks).float() * m
