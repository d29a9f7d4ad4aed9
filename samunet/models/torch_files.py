"""Writing torch files (checkpoints, encoders, exports): atomically, and checked before they take their name."""
import zipfile

import torch

from samunet.errors import SamunetError
from samunet.file_io import atomic_write


def _check_archive(path):
    """torch.save writes a zip archive; a truncated one lacks its closing directory (cheap to check, unlike
    reading the whole file back, which for a fully trained SAM ViT-H with its optimizer state is gigabytes)."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError):
        raise SamunetError(f"{path}: written incompletely") from None


def save_torch(payload, path):
    """torch.save to `path` through a checked temporary: the previous file stays until the new one is whole."""
    with atomic_write(path, _check_archive) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch reports failed writes (a full disk) as RuntimeError
            raise SamunetError(f"{path}: cannot be written ({str(err).splitlines()[0]})") from None


def load_torch(path, what):
    """A torch file read without running pickled code (weights_only); one-line errors naming `what` it should be."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SamunetError(f"{path}: {what} not found") from None
    except Exception as err:  # torch raises many types for bad files
        raise SamunetError(f"{path}: cannot be read as {what} ({type(err).__name__})") from None
