"""Checkpoints of trained deltas: only the trainable tensors plus the metadata to rebuild the model.

`<name>.pth`  torch file: {"format", "metadata", "trainable": {name: tensor}, plus any extra state the
              trainer adds (optimizer, scheduler, RNG, epoch)}; read back with weights_only=True, so a
              checkpoint cannot run code.
`<name>.json` the same metadata, readable: backbone, strategy, classes, input size, sha256 of the base
              weights, PEFT settings, parameter counts.
Loading = build the backbone from its base weights (and the pretrained encoder the metadata names, found
beside the configuration folder: models/pretrained_encoder.py), apply the strategy, load the deltas strictly.
"""
from pathlib import Path

import torch

from samunet.errors import SamunetError
from samunet.file_io import write_json
from samunet.models.build import CHANNEL_VIEWS_KEY, FUSED_SLICES_KEY, PROMPTS_KEY, PeftConfig, build_model
from samunet.models.pretrained_encoder import METADATA_KEY as PRETRAINED_KEY, folder_for_checkpoint
from samunet.models.torch_files import load_torch, save_torch

FORMAT = "samunet-deltas-1"


def save_checkpoint(path, model, extra=None):
    path = Path(path)
    trainable = {n: t.cpu().clone() for n, t in model.trainable_state().items()}
    payload = {"format": FORMAT, "metadata": model.metadata, "trainable": trainable, **(extra or {})}
    save_torch(payload, path)
    summary = dict(model.metadata, trainable_tensors=len(trainable),
                   trainable_parameters=sum(t.numel() for t in trainable.values()))
    write_json(summary, path.with_suffix(".json"))


def read_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise SamunetError(f"{path}: checkpoint not found")
    payload = load_torch(path, "a samunet checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SamunetError(f"{path}: not a samunet checkpoint (format {FORMAT} expected)")
    return payload


def load_trainable(model, payload, source):
    """Load saved deltas into `model` strictly: same backbone, strategy, tensor names and shapes."""
    saved = payload["metadata"]
    for key in ("backbone", "strategy", "num_classes", "input_size", "input_range", "pixel_mean", "pixel_std"):
        if saved[key] != model.metadata[key]:
            raise SamunetError(
                f"{source}: made for {key} {saved[key]!r}, not {model.metadata[key]!r} "
                f"(checkpoint: backbone {saved['backbone']}, strategy {saved['strategy']})"
            )
    if saved.get(PRETRAINED_KEY) != model.metadata.get(PRETRAINED_KEY):
        raise SamunetError(f"{source}: trained from pretrained encoder {saved.get(PRETRAINED_KEY)}, "
                           f"not {model.metadata.get(PRETRAINED_KEY)}")
    if bool(saved.get(PROMPTS_KEY)) != bool(model.metadata.get(PROMPTS_KEY)):
        trained = "with prompts" if saved.get(PROMPTS_KEY) else "prompt-free"
        raise SamunetError(f"{source}: trained {trained}; the model it is loaded into is not")
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    tensors = payload["trainable"]
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise SamunetError(f"{source}: trainable tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise SamunetError(f"{source}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)


def load_model(path, checkpoint=None, device="cpu"):
    """Rebuild the model a checkpoint was trained with. `checkpoint`: the user's base weights file, for
    backbones that need one; its sha256 must match the one the deltas were trained on."""
    payload = read_checkpoint(path)
    meta = payload["metadata"]
    pretrained = meta.get(PRETRAINED_KEY)
    model = build_model(meta["backbone"], meta["strategy"], meta["num_classes"], input_size=meta["input_size"],
                        checkpoint=checkpoint, class_names=meta["class_names"], peft=PeftConfig(**meta["peft"]),
                        pretrained_encoder=folder_for_checkpoint(path, pretrained) if pretrained else None,
                        pretrained_sha256=pretrained["sha256"] if pretrained else None, prompts=meta.get(PROMPTS_KEY),
                        normalization=meta, fused_slices=meta.get(FUSED_SLICES_KEY, 0),
                        channel_views=meta.get(CHANNEL_VIEWS_KEY, 1))
    if model.metadata["base_weights"] != meta["base_weights"]:
        raise SamunetError(
            f"{path}: trained on base weights {meta['base_weights'][:16]}..., but the {meta['backbone']} weights "
            f"found now are {model.metadata['base_weights'][:16]}...; pass the original file with --checkpoint"
        )
    load_trainable(model, payload, path)
    for key, value in meta.items():  # what the trainer added (e.g. the axes it mirrored) comes back too
        model.metadata.setdefault(key, value)
    return model.to(device), payload
