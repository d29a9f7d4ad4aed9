"""Pretrained image encoders (samunet_pretrain's output) and how a model starts from one.

In `$SAMUNET_RESULTS/DatasetXXX_Name/pretrained/<name>/`:
- `encoder.pth`   the image encoder's state dict. LoRA is merged into the weights, so the keys are the
                  backbone's own; adapters (not mergeable: they are non-linear) keep their modules' names
                  and are rebuilt before loading.
- `encoder.json`  what it is: backbone, the sha256 of the weights pretraining started from, input size,
                  objective, mask ratio, what was tuned, the data (case count, a hash of the case list),
                  steps, final loss, and `sha256`, the hash of encoder.pth itself.
A model built with a pretrained encoder records {"name", "sha256"} in its metadata; whoever rebuilds it
(prediction, export, resumed training) loads the same file and refuses one whose hash differs.
"""
from pathlib import Path

from samunet.errors import SamunetError
from samunet.file_io import read_json, write_json
from samunet.layout import pretrained_encoder_folder
from samunet.models.adapters import add_encoder_adapters
from samunet.models.torch_files import load_torch, save_torch
from samunet.models.weights import sha256_of

ENCODER_FILE = "encoder.pth"
DESCRIPTION_FILE = "encoder.json"
METADATA_KEY = "pretrained_encoder"  # in model metadata: {"name", "sha256"}


def save_pretrained_encoder(folder, encoder, description):
    """Write encoder.pth, then encoder.json with the file's sha256 (the json last: it marks completion)."""
    folder = Path(folder)
    path = folder / ENCODER_FILE
    save_torch({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, path)
    description = dict(description, sha256=sha256_of(path))
    write_json(description, folder / DESCRIPTION_FILE)
    return description


def read_description(folder):
    path = Path(folder) / DESCRIPTION_FILE
    if not path.is_file():
        raise SamunetError(f"{path}: no pretrained encoder here (run samunet_pretrain, or check the name)")
    description = read_json(path)
    missing = [k for k in ("backbone", "base_weights", "input_size", "tune", "sha256") if k not in description]
    if missing:
        raise SamunetError(f"{path}: not a samunet_pretrain description (no {', '.join(missing)})")
    return description


def apply_pretrained_encoder(parts, folder, expected_sha256=None, normalization=None):
    """Replace `parts.image_encoder`'s weights by the pretrained encoder in `folder` (strictly), after
    checking that it was pretrained from these very base weights at this input size and that its file is
    unchanged (against encoder.json and, when rebuilding a trained model, against `expected_sha256`), and,
    where encoder.json records it, that it saw inputs normalised as `normalization` (its fields) will be.
    Returns the record for the model's metadata."""
    folder = Path(folder)
    description = read_description(folder)
    path = folder / ENCODER_FILE
    if not path.is_file():
        raise SamunetError(f"{path}: pretrained encoder file missing")
    sha = sha256_of(path)
    if sha != description["sha256"] or (expected_sha256 and sha != expected_sha256):
        wanted = expected_sha256 or description["sha256"]
        raise SamunetError(f"{path}: changed since it was made (sha256 {sha[:16]}..., expected {wanted[:16]}...)")
    for key, have in (("backbone", parts.backbone), ("base_weights", parts.base_weights),
                      ("input_size", parts.input_size)):
        if description[key] != have:
            raise SamunetError(f"{folder / DESCRIPTION_FILE}: pretrained for {key} {description[key]!r}, "
                               f"this model has {have!r}")
    recorded = description.get("input_normalization")
    if recorded is not None and normalization is not None and recorded != normalization:
        raise SamunetError(f"{folder / DESCRIPTION_FILE}: pretrained on inputs normalised as {recorded}, this model "
                           f"is fed {normalization}")
    if description["tune"] == "adapter":
        add_encoder_adapters(parts.image_encoder, description["adapter_ratio"])
    state = load_torch(path, "a pretrained encoder")
    try:
        parts.image_encoder.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError) as err:
        raise SamunetError(f"{path}: does not fit the {parts.backbone} encoder ({str(err).splitlines()[0][:160]})") from None
    return {"name": folder.name, "sha256": sha}


def folder_for_checkpoint(checkpoint_path, record):
    """Where the pretrained encoder of a trained checkpoint lies: its dataset's results folder holds both
    (DatasetXXX_Name/<configuration>/fold_F/checkpoint.pth and DatasetXXX_Name/pretrained/<name>/)."""
    parents = Path(checkpoint_path).resolve().parents
    if len(parents) < 3:
        raise SamunetError(f"{checkpoint_path}: starts from pretrained encoder '{record['name']}', which lies "
                           "beside its configuration folder; keep the results folder's layout")
    return pretrained_encoder_folder(parents[2], record["name"])
