"""`sam_decoder` head (SAMed): SAM's mask decoder with K+1 mask tokens, one per class, in one pass.

Prompt-free: SAM's 'no prompt' embeddings in, K+1 class logits out. A head built `prompted` has one more
token in front, SAM's own single-mask token: given a box and/or points it gives one binary mask per
prompt, as released SAM does (multimask_output=False), while the class tokens keep serving prompt-free use.
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

    def __init__(self, parts, num_classes, prompted=False):
        super().__init__()
        self.num_outputs = num_classes + 1
        self.prompted = prompted
        self.prompt_encoder = parts.prompt_encoder
        # token i starts from pretrained token i mod 4; a prompted head's token 0 is the single-mask one
        sources = ([0] if prompted else []) + [i % 4 for i in range(self.num_outputs)]
        self.decoder = resized_mask_decoder(parts.mask_decoder, sources)
        self.first_class_token = 1 if prompted else 0

    def forward(self, embeddings):
        sparse, dense = encode_prompts(self.prompt_encoder, embeddings.shape[0])
        masks, _ = decode_masks(self.decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks[:, self.first_class_token :]

    def segment_prompts(self, embeddings, boxes=None, points=None):
        """embeddings (P, C, h, w), one per prompt; boxes (P, 4); points ((P, N, 2), (P, N)) -> (P, 1, 4h, 4w)."""
        sparse, dense = encode_prompts(self.prompt_encoder, embeddings.shape[0], boxes, points)
        masks, _ = decode_masks(self.decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks[:, :1]
