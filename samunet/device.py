"""The torch device a command runs on: CUDA when there is one, unless the user chose."""
import torch

from samunet.errors import SamunetError


def resolve_device(name):
    """name: "cpu", "cuda" or None (CUDA when available, else CPU)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SamunetError("--device cuda: no CUDA device is available")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
