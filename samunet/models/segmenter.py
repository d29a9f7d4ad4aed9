"""The trainable model: image encoder + head, images in -> (B, K+1, S, S) class logits out, and, for a
prompted head, one (S, S) mask logit map per prompt.

`encode` and `decode` are separate so that a trainer can cache embeddings of a frozen encoder. A model
that fuses several embeddings per slice in the head (models/slice_fusion.py: neighbouring slices z - n ..
z + n, and each channel when channels are encoded separately) takes per slice those V images and decodes
their V embeddings: (B, V, ...) instead of (B, ...).
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class SamSegmenter(nn.Module):
    def __init__(self, encoder, head, input_size, pixel_mean, pixel_std, encoder_frozen, metadata, fusion=None):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.fusion = fusion  # a SliceFusion, or None: the slice alone
        self.input_size = input_size
        self.encoder_frozen = encoder_frozen
        self.metadata = metadata
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def num_outputs(self):
        return self.head.num_outputs

    def encode(self, images):
        """images: (B, 3, S, S) in the backbone's input range (plan: backbones.<name>.input_range), or
        (B, V, 3, S, S) for a model that fuses V embeddings per slice (each image encoded alone)."""
        if images.dim() == 5:
            return self.encode(images.flatten(0, 1)).unflatten(0, images.shape[:2])
        return self.encoder((images - self.pixel_mean) / self.pixel_std)

    def fused(self, embeddings):
        """The head's input: (B, C, h, w), neighbouring slices' embeddings fused when the model does that."""
        return embeddings if self.fusion is None else self.fusion(embeddings)

    def _at_input_size(self, logits):
        if logits.shape[-2:] != (self.input_size, self.input_size):
            logits = F.interpolate(logits, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return logits

    def decode_prompts(self, embeddings, group):
        """One prompts/tensors.PromptGroup on (B, C, h, w) embeddings -> (P, S, S) mask logits."""
        masks = self.head.segment_prompts(self.fused(embeddings[group.slice_index]), group.boxes, group.points)
        return self._at_input_size(masks)[:, 0]

    def decode(self, embeddings, prompt_groups=None):
        """Class logits (B, K+1, S, S); with prompt groups also the list of their mask logits (prompted
        training computes both from one set of embeddings)."""
        logits = self._at_input_size(self.head(self.fused(embeddings)))
        if prompt_groups is None:
            return logits
        return logits, [self.decode_prompts(embeddings, g) for g in prompt_groups]

    def forward(self, images, prompt_groups=None):
        return self.decode(self.encode(images), prompt_groups)

    def train(self, mode=True):
        super().train(mode)
        if mode:
            # Frozen parts keep inference behaviour: batch norm statistics must not drift (that would
            # also invalidate cached embeddings).
            if self.encoder_frozen:
                self.encoder.eval()
            for module in self.modules():
                if isinstance(module, _BatchNorm) and not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def trainable_state(self):
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
