"""SAM's ViT image encoder run on the visible patches only, as MAE needs.

SAM's blocks attend within 14 x 14 windows (most blocks) or over the whole grid (a few), with decomposed
relative position biases, and both expect the full 2D grid. On a sparse set of tokens the same attention
is: every pair of tokens that would share a window (or, in global blocks, every pair) attends, with the
bias looked up from the two tokens' grid coordinates. The block's own weights are used as they are
(LoRA-wrapped projections and adapters included), so pretraining trains what fine-tuning will load. The
only difference from the dense forward: the zero padding tokens that dense windowing adds at the lower
and right borders are not there to attend to.
"""
import torch
from segment_anything.modeling.image_encoder import get_rel_pos

from samunet.models.adapters import WithAdapterAfter


def _relative_bias(q, table, q_pos, k_pos, size):
    """bias[b, h, i, j] = q[b, h, i] . R[q_pos[b, i], k_pos[b, j]] with R = get_rel_pos(size, size, table)."""
    r = get_rel_pos(size, size, table)  # (size, size, head_dim): [query position, key position]
    per_key_position = torch.einsum("bhnd,bnkd->bhnk", q, r[q_pos].to(q.dtype))  # (B, heads, N, size)
    index = k_pos[:, None, None, :].expand(-1, q.shape[1], q.shape[2], -1)
    return per_key_position.gather(-1, index)


def sparse_attention(attn, x, rows, cols, window_size, grid):
    """segment_anything Attention on tokens x (B, N, C) at grid positions (rows, cols) (B, N)."""
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    size = window_size or grid
    if attn.use_rel_pos:
        qr, qc = (rows % size, cols % size) if window_size else (rows, cols)
        logits = logits + _relative_bias(q, attn.rel_pos_h, qr, qr, size) + _relative_bias(q, attn.rel_pos_w, qc, qc, size)
    if window_size:
        per_row = -(-grid // window_size)
        window = (rows // window_size) * per_row + cols // window_size
        apart = window[:, :, None] != window[:, None, :]
        logits = logits.masked_fill(apart[:, None], float("-inf"))
    out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
    return attn.proj(out)


def sparse_block(block, x, rows, cols, grid):
    attn, adapter = block.attn, None
    if isinstance(attn, WithAdapterAfter):
        attn, adapter = attn.module, attn.adapter
    y = sparse_attention(attn, block.norm1(x), rows, cols, block.window_size, grid)
    if adapter is not None:
        y = y + adapter(y)
    x = x + y
    return x + block.mlp(block.norm2(x))


def encode_visible(encoder, images, keep):
    """Token features (B, N_visible, C) of the patches where `keep` (B, grid * grid, bool, the same count
    in every sample) is True, and their flat indices (B, N_visible)."""
    x = encoder.patch_embed(images)  # (B, grid, grid, C)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    b, grid, _, c = x.shape
    index = keep.nonzero()[:, 1].view(b, -1)
    x = x.reshape(b, grid * grid, c).gather(1, index[:, :, None].expand(-1, -1, c))
    rows, cols = index // grid, index % grid
    for block in encoder.blocks:
        x = sparse_block(block, x, rows, cols, grid)
    return x, index
