"""`samunet_export CHECKPOINT -o model.pth`: one standalone state dict with LoRA merged into the weights.

For `sam_decoder` strategies without adapters the keys follow segment_anything's `Sam` naming
(`image_encoder.`, `prompt_encoder.`, `mask_decoder.`), so the file loads into segment_anything classes
built with `num_multimask_outputs = K` (K+1 mask tokens; a prompted model has SAM's 4 in front). Other heads,
adapters and heads that fuse neighbouring slices keep samunet's names (`encoder.`, `head.`, `fusion.`) and
load into samunet's model. A JSON beside the file says which.
"""
import argparse
from pathlib import Path

import torch

from samunet.errors import SamunetError, cli_entry
from samunet.file_io import atomic_write, write_json
from samunet.models.build import PROMPTS_KEY
from samunet.models.checkpoint import load_model
from samunet.models.lora import merge_lora
from samunet.models.strategies import get_strategy

SAM_NAMES = (("encoder.", "image_encoder."), ("head.prompt_encoder.", "prompt_encoder."), ("head.decoder.", "mask_decoder."))


def export_state(model):
    merge_lora(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    strategy = get_strategy(model.metadata["strategy"])
    if strategy.head != "sam_decoder" or "adapter" in (strategy.encoder, strategy.decoder) or model.fusion is not None:
        # a fusing head (fusion.) has no segment_anything counterpart
        return state, "samunet.models.build.build_model(...) with strategy 'full' keys (encoder., head., fusion.)"
    renamed = {}
    for key, value in state.items():
        for old, new in SAM_NAMES:
            if key.startswith(old):
                renamed[new + key[len(old):]] = value
                break
    num_tokens = renamed["mask_decoder.mask_tokens.weight"].shape[0]
    loads_into = f"segment_anything Sam with MaskDecoder(num_multimask_outputs={num_tokens - 1})"
    if model.metadata.get(PROMPTS_KEY):  # models/heads/sam_decoder.py: SAM's 4 tokens, then the classes
        loads_into += "; mask tokens 0-3 are SAM's (prompted: token 0's mask), 4 on the classes (prompt-free)"
    return renamed, loads_into


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Merge a samunet checkpoint into one standalone state dict.")
    parser.add_argument("checkpoint", help="a samunet checkpoint (.pth)")
    parser.add_argument("-o", "--output", required=True, help="file to write (.pth)")
    parser.add_argument("--checkpoint-base", default=None, help="base SAM weights, if the backbone needs a file")
    args = parser.parse_args(argv)
    out = Path(args.output)
    if out.resolve() == Path(args.checkpoint).resolve():
        raise SamunetError(f"{out}: would overwrite the input checkpoint")
    if out.exists():
        raise SamunetError(f"{out}: already exists; remove it or choose another name")
    model, _ = load_model(args.checkpoint, checkpoint=args.checkpoint_base)
    state, loads_into = export_state(model)
    with atomic_write(out) as tmp:
        torch.save(state, tmp)
    write_json(dict(model.metadata, loads_into=loads_into, lora_merged=True), out.with_suffix(".json"))
    print(f"wrote {out} ({sum(v.numel() for v in state.values())} values; loads into {loads_into})")
