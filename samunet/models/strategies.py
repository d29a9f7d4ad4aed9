"""Fine-tuning strategies: each is a declaration of a head and how the encoder and decoder are tuned.

encoder / decoder modes: `frozen`, `full` (every weight trained), `lora` (LoRA on the encoder's fused qkv or
the decoder transformer's q/v projections), `adapter` (bottleneck adapters). In `lora` and `adapter`
decoder modes the per-class parts of the head (mask tokens and their hypernetwork MLPs) are trained too.
The prompt encoder and the unused IoU head are never trained.
"""
from dataclasses import dataclass

from samunet.errors import SamunetError


@dataclass(frozen=True)
class Strategy:
    name: str
    head: str
    encoder: str
    decoder: str
    summary: str

    @property
    def encoder_frozen(self):
        """True when encoder outputs never change, so a trainer may cache them."""
        return self.encoder == "frozen"


STRATEGIES = {
    s.name: s
    for s in (
        Strategy("full", "sam_decoder", "full", "full", "everything but the prompt encoder"),
        Strategy("decoder", "sam_decoder", "frozen", "full", "multi-class mask decoder only"),
        Strategy("lora_encoder", "sam_decoder", "lora", "full", "SAMed: LoRA in the encoder, decoder fully trained"),
        Strategy("lora_decoder", "sam_decoder", "frozen", "lora", "LoRA in the decoder transformer"),
        Strategy("lora_both", "sam_decoder", "lora", "lora", "LoRA in encoder and decoder"),
        Strategy("adapter_encoder", "sam_decoder", "adapter", "full", "adapters in the encoder, decoder fully trained"),
        Strategy("adapter_decoder", "sam_decoder", "frozen", "adapter", "adapters in the decoder transformer"),
        Strategy("adapter_both", "sam_decoder", "adapter", "adapter", "adapters in encoder and decoder"),
        Strategy("autosam", "autosam", "frozen", "full", "SAM decoder driven by learned class tokens"),
        Strategy("cnn_head", "cnn", "frozen", "full", "convolutional upsampling head on frozen embeddings"),
        Strategy("linear_head", "linear", "frozen", "full", "linear per-token classifier on frozen embeddings"),
    )
}


def get_strategy(name):
    if isinstance(name, Strategy):
        return name
    if name not in STRATEGIES:
        raise SamunetError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
