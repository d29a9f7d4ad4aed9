"""A segment_anything MaskDecoder with a chosen number of mask tokens, initialised from a pretrained one.

SAM's decoder has 4 mask tokens (1 single-mask + 3 multimask) with one hypernetwork MLP each. Token i of
the new decoder takes token, MLP and IoU-head row `sources[i]` of the pretrained one: every class starts
from a pretrained mask query instead of noise (the transformer and upscaling are copied unchanged).
"""
import torch
from segment_anything.modeling import MaskDecoder


def resized_mask_decoder(pretrained, sources):
    num_mask_tokens = len(sources)
    decoder = MaskDecoder(
        num_multimask_outputs=num_mask_tokens - 1,
        transformer=pretrained.transformer,
        transformer_dim=pretrained.transformer_dim,
        iou_head_depth=pretrained.iou_prediction_head.num_layers,
        iou_head_hidden_dim=pretrained.iou_prediction_head.layers[0].out_features,
    )
    decoder.iou_token.load_state_dict(pretrained.iou_token.state_dict())
    decoder.output_upscaling.load_state_dict(pretrained.output_upscaling.state_dict())
    with torch.no_grad():
        for i, j in enumerate(sources):
            decoder.mask_tokens.weight[i] = pretrained.mask_tokens.weight[j]
            decoder.output_hypernetworks_mlps[i].load_state_dict(pretrained.output_hypernetworks_mlps[j].state_dict())
        head, src = decoder.iou_prediction_head, pretrained.iou_prediction_head
        for layer, src_layer in zip(head.layers[:-1], src.layers[:-1]):
            layer.load_state_dict(src_layer.state_dict())
        head.layers[-1].weight.copy_(src.layers[-1].weight[sources])
        head.layers[-1].bias.copy_(src.layers[-1].bias[sources])
    return decoder
