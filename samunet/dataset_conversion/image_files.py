"""Reading 2D image and mask files (PNG, JPEG, BMP, TIFF) for the converters; a 2D image becomes a one-slice
volume with nnU-Net's 2D convention (slice spacing 999, so the slicing axis is the single slice)."""
import numpy as np
from PIL import Image

from samunet.errors import SamunetError
from samunet.imageio import Geometry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GEOMETRY_2D = Geometry((1.0, 1.0, 999.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def read_2d(path, mode_name):
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except OSError as err:
        raise SamunetError(f"{path}: cannot be read as a {mode_name} ({err})") from None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # grey or RGB with alpha: drop the alpha
        arr = arr[..., 0] if arr.shape[2] == 2 else arr[..., :3]
    return arr


def split_channels(arr):
    return [arr] if arr.ndim == 2 else [arr[..., c] for c in range(arr.shape[2])]


def mask_to_labels(mask, path):
    if mask.ndim == 3:
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[2])):
            raise SamunetError(f"{path}: colour mask; masks must hold class indices in one channel")
        mask = mask[..., 0]
    values = set(np.unique(mask).tolist())
    if values <= {0, 255}:
        return (mask > 0).astype(np.uint8)
    return mask.astype(np.uint8)


def image_files(folder):
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))



def is_grey(arr):
    """A 2D array, or an RGB image whose channels are equal (a grey slice saved as RGB)."""
    return arr.ndim == 2 or all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2]))
