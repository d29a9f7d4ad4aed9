"""Running a SAM ViT at an input size other than its checkpoint's (SAMed trains at 512).

Only two kinds of tensors depend on the input size: the absolute position embedding (resized bilinearly
on its patch grid) and the relative-position tables of the global-attention blocks (resized linearly
along their length). Windowed blocks always see 14x14 windows, so their tables stay as they are.
"""
import torch.nn.functional as F

from samunet.errors import SamunetError


def patch_grid(input_size, patch_size=16):
    if input_size % patch_size:
        raise SamunetError(f"input size {input_size} is not a multiple of the patch size {patch_size}")
    return input_size // patch_size


def resize_vit_encoder_state(state, input_size, global_attn_indexes, patch_size=16):
    """Return a copy of an ImageEncoderViT state dict fitted to `input_size` (unchanged at its own size)."""
    grid = patch_grid(input_size, patch_size)
    state = dict(state)
    pos = state["pos_embed"]  # (1, grid, grid, C)
    if pos.shape[1] != grid or pos.shape[2] != grid:
        pos = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bilinear", align_corners=False)
        state["pos_embed"] = pos.permute(0, 2, 3, 1).to(state["pos_embed"].dtype)
    for index in global_attn_indexes:
        for axis in ("h", "w"):
            key = f"blocks.{index}.attn.rel_pos_{axis}"
            table = state[key]  # (2 * grid - 1, head_dim)
            if table.shape[0] != 2 * grid - 1:
                resized = F.interpolate(table.T[None].float(), size=2 * grid - 1, mode="linear", align_corners=False)
                state[key] = resized[0].T.to(table.dtype)
    return state


def checkpoint_input_size(encoder_state, patch_size=16):
    return encoder_state["pos_embed"].shape[1] * patch_size
