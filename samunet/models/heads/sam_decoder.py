"""`sam_decoder` head (SAMed): SAM's mask decoder with K+1 mask tokens, one per class, in one pass.

Prompt-free: SAM's 'no prompt' embeddings in, K+1 class logits out. A head built `prompted` also keeps
SAM's own four mask tokens in front: a box and/or points go through the decoder with exactly SAM's token
sequence, and the single-mask token's output is the prompt's mask, as released SAM gives it
(multimask_output=False; untrained, the head is SAM). The class tokens decode without them, as in a
prompt-free head, so the one model serves both.
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
        sam_tokens = parts.mask_decoder.num_mask_tokens
        # class token i starts from pretrained token i mod 4 (background from the single-mask one)
        sources = (list(range(sam_tokens)) if prompted else []) + [i % sam_tokens for i in range(self.num_outputs)]
        self.decoder = resized_mask_decoder(parts.mask_decoder, sources)
        self.class_tokens = slice(sam_tokens if prompted else 0, None)
        self.prompt_tokens = slice(0, sam_tokens)

    def forward(self, embeddings):
        sparse, dense = encode_prompts(self.prompt_encoder, embeddings.shape[0])
        masks, _ = decode_masks(self.decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                self.class_tokens)
        return masks

    def segment_prompts(self, embeddings, boxes=None, points=None):
        """embeddings (P, C, h, w), one per prompt; boxes (P, 4); points ((P, N, 2), (P, N)) -> (P, 1, 4h, 4w)."""
        sparse, dense = encode_prompts(self.prompt_encoder, embeddings.shape[0], boxes, points)
        masks, _ = decode_masks(self.decoder, embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                self.prompt_tokens)
        return masks[:, :1]
