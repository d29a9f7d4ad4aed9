"""`autosam` head: SAM's mask decoder with its single mask token, driven by learned class tokens.

Each class has a learned prompt token; all B x (K+1) (image, class) pairs go through the decoder in one
batched pass, and each pair's one mask is that class's logit map. No prompt from the user is needed.
"""
import torch
from torch import nn

from samunet.models.decoding import decode_masks
from samunet.models.heads.multiclass_decoder import resized_mask_decoder


class AutoSamHead(nn.Module):
    always_frozen = ("decoder.iou_prediction_head.",)
    class_specific = ("class_tokens",)
    uses_prompts = False

    def __init__(self, parts, num_classes):
        super().__init__()
        self.num_outputs = num_classes + 1
        self.prompt_encoder = parts.prompt_encoder
        self.decoder = resized_mask_decoder(parts.mask_decoder, [0])
        # Start every class from SAM's foreground-point embedding, kept apart by small noise.
        foreground = parts.prompt_encoder.point_embeddings[1].weight.detach()
        tokens = foreground.repeat(self.num_outputs, 1) + 0.02 * torch.randn(self.num_outputs, foreground.shape[-1])
        self.class_tokens = nn.Parameter(tokens.unsqueeze(1))  # (K+1, 1, C)

    def forward(self, embeddings):
        b, k = embeddings.shape[0], self.num_outputs
        pairs = embeddings.repeat_interleave(k, dim=0)  # image-major: (b0,c0), (b0,c1), ...
        sparse = self.class_tokens.repeat(b, 1, 1)
        h, w = self.prompt_encoder.image_embedding_size
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b * k, -1, h, w)
        masks, _ = decode_masks(self.decoder, pairs, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks.reshape(b, k, *masks.shape[-2:])
