"""Finding, hashing and reading SAM checkpoint files."""
import hashlib
import os
from pathlib import Path

import torch

from samunet.errors import SamunetError

CHECKPOINTS_VAR = "SAMUNET_CHECKPOINTS"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_checkpoint(backbone, official_name, checkpoint=None):
    """The user's --checkpoint, else the official file name inside SAMUNET_CHECKPOINTS."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise SamunetError(f"{path}: checkpoint file not found")
        return path
    folder = os.environ.get(CHECKPOINTS_VAR)
    if folder and (Path(folder) / official_name).is_file():
        return Path(folder) / official_name
    where = f"{CHECKPOINTS_VAR}={folder}" if folder else f"{CHECKPOINTS_VAR} is not set"
    raise SamunetError(
        f"no checkpoint for backbone {backbone}: pass --checkpoint PATH or put {official_name} into the folder "
        f"named by {CHECKPOINTS_VAR} ({where})"
    )


def read_state_dict(path):
    """A state dict from a .pth/.pt file, loaded without running pickled code (weights_only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise SamunetError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SamunetError(f"{path}: holds no state dict")
    return state


def split_sam_state(state, path):
    """{'image_encoder': ..., 'prompt_encoder': ..., 'mask_decoder': ...} from a SAM-style state dict."""
    parts = {"image_encoder": {}, "prompt_encoder": {}, "mask_decoder": {}}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts:
            parts[prefix][rest] = value
    missing = [name for name, part in parts.items() if not part]
    if missing:
        raise SamunetError(f"{path}: not a SAM checkpoint (no {', '.join(missing)} weights)")
    return parts
