"""Checkpoints of trained deltas: only the trainable tensors plus the metadata to rebuild the model.

`<name>.pth`  torch file: {"format", "metadata", "trainable": {name: tensor}, plus any extra state the
              trainer adds (optimizer, scheduler, RNG, epoch)}; read back with weights_only=True, so a
              checkpoint cannot run code.
`<name>.json` the same metadata, readable: backbone, strategy, classes, input size, sha256 of the base
              weights, PEFT settings, parameter counts.
Loading = build the backbone from its base weights, apply the strategy, load the deltas strictly.
"""
import zipfile
from pathlib import Path

import torch

from samunet.errors import SamunetError
from samunet.file_io import atomic_write, write_json
from samunet.models.build import PeftConfig, build_model

FORMAT = "samunet-deltas-1"


def save_checkpoint(path, model, extra=None):
    path = Path(path)
    trainable = {n: t.cpu().clone() for n, t in model.trainable_state().items()}
    payload = {"format": FORMAT, "metadata": model.metadata, "trainable": trainable, **(extra or {})}
    with atomic_write(path, _check_archive) as tmp:  # checked before it replaces the previous one
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch reports failed writes (a full disk) as RuntimeError
            raise SamunetError(f"{path}: cannot be written ({str(err).splitlines()[0]})") from None
    summary = dict(model.metadata, trainable_tensors=len(trainable),
                   trainable_parameters=sum(t.numel() for t in trainable.values()))
    write_json(summary, path.with_suffix(".json"))


def _check_archive(path):
    """torch.save writes a zip archive; a truncated one lacks its closing directory (cheap to check, unlike
    reading the whole file back, which for a fully trained SAM ViT-H with its optimizer state is gigabytes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError):
        raise SamunetError(f"{path}: written incompletely") from None


def read_checkpoint(path):
    path = Path(path)
    if not path.is_file():
        raise SamunetError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SamunetError(f"{path}: cannot be read as a samunet checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SamunetError(f"{path}: not a samunet checkpoint (format {FORMAT} expected)")
    return payload


def load_trainable(model, payload, source):
    """Load saved deltas into `model` strictly: same backbone, strategy, tensor names and shapes."""
    saved = payload["metadata"]
    for key in ("backbone", "strategy", "num_classes", "input_size"):
        if saved[key] != model.metadata[key]:
            raise SamunetError(
                f"{source}: made for {key} {saved[key]!r}, not {model.metadata[key]!r} "
                f"(checkpoint: backbone {saved['backbone']}, strategy {saved['strategy']})"
            )
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
    model = build_model(meta["backbone"], meta["strategy"], meta["num_classes"], input_size=meta["input_size"],
                        checkpoint=checkpoint, class_names=meta["class_names"], peft=PeftConfig(**meta["peft"]))
    if model.metadata["base_weights"] != meta["base_weights"]:
        raise SamunetError(
            f"{path}: trained on base weights {meta['base_weights'][:16]}..., but the {meta['backbone']} weights "
            f"found now are {model.metadata['base_weights'][:16]}...; pass the original file with --checkpoint"
        )
    load_trainable(model, payload, path)
    for key, value in meta.items():  # what the trainer added (e.g. the axes it mirrored) comes back too
        model.metadata.setdefault(key, value)
    return model.to(device), payload
