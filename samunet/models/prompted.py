"""SAM as released: one binary mask per box prompt, from the backbone's own single-mask output."""
import torch
import torch.nn.functional as F

from samunet.models.decoding import decode_masks, encode_prompts


@torch.no_grad()
def segment_with_boxes(parts, images, boxes, pixel_mean, pixel_std):
    """images (B, 3, S, S) in the backbone's input range, boxes (B, 4) xyxy in input pixels
    -> mask logits (B, S, S) from SAM's single-mask token (multimask_output=False)."""
    mean = torch.as_tensor(pixel_mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=images.dtype).view(1, 3, 1, 1)
    embeddings = parts.image_encoder((images - mean) / std)
    sparse, dense = encode_prompts(parts.prompt_encoder, images.shape[0], boxes=boxes)
    masks, _ = decode_masks(parts.mask_decoder, embeddings, parts.prompt_encoder.get_dense_pe(), sparse, dense)
    return F.interpolate(masks[:, :1], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
