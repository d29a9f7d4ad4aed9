"""`sam_decoder` head (SAMed): SAM's mask decoder with K+1 mask tokens, one per class, in one pass.

Prompt-free by default (SAM's 'no prompt' embeddings); box or point prompts can still be given.
"""
from torch import nn

from samunet.models.decoding import decode_masks, encode_prompts
from samunet.models.heads.multiclass_decoder import resized_mask_decoder


class SamDecoderHead(nn.Module):
    # The IoU head predicts a score nobody uses in prompt-free multi-class training: never trained.
    always_frozen = ("decoder.iou_prediction_head.",)
    # New per-class parts: trained even when the rest of the decoder is only LoRA-tuned or adapted.
    class_specific = ("decoder.mask_tokens.", "decoder.output_hypernetworks_mlps.")
    uses_prompts = True

    def __init__(self, parts, num_classes):
        super().__init__()
        self.num_outputs = num_classes + 1
        self.prompt_encoder = parts.prompt_encoder
        self.decoder = resized_mask_decoder(parts.mask_decoder, self.num_outputs)

    def forward(self, embeddings, boxes=None, points=None):
        sparse, dense = encode_prompts(self.prompt_encoder, embeddings.shape[0], boxes, points)
        masks, _ = decode_masks(self.decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks
