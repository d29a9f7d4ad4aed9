"""A faster model for inference with a frozen image encoder (prediction, embedding cache).

Under bf16 autocast the encoder still keeps fp32 weights, casts them on every call and runs batch norm
and GELU on fp32 activations. For inference nothing needs the fp32 copy, so the encoder is given
bf16 (or fp16) weights, channels-last memory (what oneDNN's convolutions want) and, for TinyViT, its
convolution + batch-norm pairs folded into one convolution. Measured on the LiteMedSAM encoder on the
reference CPU: 0.61 s per 256 x 256 slice against 1.30 s with autocast at batch 8; with its real weights on
hippocampus slices at 96 x 96, 0.054-0.060 s against 0.068 (benchmarks/encoder_precision.py), with the
same error against fp32 as autocast (6.8% vs 5.8% relative in the image embeddings). The head keeps
running under autocast.

LoRA updates are merged into their base weights first (the same function up to rounding, one matrix
product instead of three): a LiteMedSAM `lora_both` hippocampus volume with TTA, 9.0 s against 9.3-10.1.
"""
import torch
from torch import nn

from samunet.models.lora import merge_lora

CHUNK_PIXELS = 4 * 128 * 128  # slices per encoder call on CPU: this many pixels at most (at least one slice)


def fold_batch_norms(module):
    """Replace every TinyViT `Conv2d_BN` (a conv followed by an eval-mode batch norm) by the one
    convolution it computes. Works in place; other modules are left as they are."""
    for name, child in module.named_children():
        if type(child).__name__ == "Conv2d_BN" and hasattr(child, "fuse"):
            setattr(module, name, child.fuse())
        else:
            fold_batch_norms(child)
    return module


class ChannelsLastGELU(nn.GELU):
    """nn.GELU that runs on the dense NHWC view of a channels-last image tensor: PyTorch's elementwise
    kernels take a slower strided path for channels-last NCHW (bf16 GELU on the reference CPU: 14.8 ms
    against 7.5 for a 7 x 256 x 96 x 96 tensor), and TinyViT's convolution stages apply GELU three
    times per block at full input resolution."""

    def forward(self, x):
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


def channels_last_gelus(module):
    """Replace every plain nn.GELU under `module` by ChannelsLastGELU (same approximation). In place."""
    for name, child in module.named_children():
        if type(child) is nn.GELU:
            setattr(module, name, ChannelsLastGELU(approximate=child.approximate))
        else:
            channels_last_gelus(child)
    return module


class LowPrecisionEncoder(nn.Module):
    def __init__(self, encoder, dtype):
        super().__init__()
        self.dtype = dtype
        encoder = channels_last_gelus(fold_batch_norms(encoder))
        self.encoder = encoder.to(dtype).to(memory_format=torch.channels_last)

    def forward(self, images):
        images = images.to(self.dtype).contiguous(memory_format=torch.channels_last)
        if images.device.type != "cpu":
            return self.encoder(images)
        return encode_in_chunks(self.encoder, images)


def encode_in_chunks(encoder, images):
    """encoder(images) in equal chunks of at most CHUNK_PIXELS pixels. On CPU small chunks are fastest:
    TinyViT's first stage holds 256 channels at full input resolution, and a batch of such activations
    no longer fits the caches. Measured on the reference CPU: at 256 x 256, 0.53 s per slice one at a
    time against 0.73 at batch 8; at 128 x 128, 0.14 s in chunks of 4 against 0.17 one at a time and
    0.20 at batch 8."""
    most = max(1, CHUNK_PIXELS // (images.shape[-2] * images.shape[-1]))
    chunks = -(-len(images) // most)  # equal chunks: 8 slices as 4 + 4, not as 7 + a slow 1
    return torch.cat([encoder(chunk) for chunk in images.tensor_split(chunks)])


def for_inference(model, dtype):
    """Put `model` (a SamSegmenter) in eval mode with its LoRA layers merged and, unless dtype is None,
    run its encoder in `dtype` (torch.bfloat16 or torch.float16) from now on. Changes the model in
    place: pass a copy (copy.deepcopy) of one that will still be trained."""
    model.eval()
    merge_lora(model)
    if dtype is not None and not isinstance(model.encoder, LowPrecisionEncoder):
        model.encoder = LowPrecisionEncoder(model.encoder, dtype)
    return model
