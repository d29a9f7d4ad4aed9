"""Prompt-free multi-class heads: each maps image embeddings to K+1 class logits (background first)."""
from samunet.models.heads.autosam import AutoSamHead
from samunet.models.heads.cnn import CnnHead
from samunet.models.heads.linear import LinearHead
from samunet.models.heads.sam_decoder import SamDecoderHead

HEADS = {"sam_decoder": SamDecoderHead, "autosam": AutoSamHead, "cnn": CnnHead, "linear": LinearHead}
