"""`samunet_convert_npz -i FOLDER -d ID -n NAME`: MedSAM / LiteMedSAM `.npz` files -> nnU-Net v2 dataset.

Each FOLDER/{case}.npz holds `imgs` and, for training cases, `gts` (label values), as MedSAM's
preprocessing writes them: 3D `(D, H, W)`, 2D grey `(H, W)` or 2D colour `(H, W, 3)` images, and an
optional `spacing` in SimpleITK's (x, y, z) order (MedSAM saves `GetSpacing()`); 2D cases get nnU-Net's 2D
convention (slice spacing 999), 3D cases without `spacing` 1 x 1 x 1. Files with `gts` become training cases,
files without it test cases (imagesTs/). MedSAM stores images already scaled to 0..255 (uint8): those are
normalised by /255 (`rgb_to_0_1`), as MedSAM does; other value types get per-case z-scoring. `gts` must have
the image's spatial shape and integer values.
"""
import argparse
import zipfile
from pathlib import Path

import numpy as np

from samunet.dataset_conversion.dataset_writer import (add_dataset_arguments, class_labels, staged_dataset,
                                                        write_dataset_json)
from samunet.dataset_conversion.image_files import GEOMETRY_2D
from samunet.errors import SamunetError, cli_entry
from samunet.imageio import Geometry, write_image
from samunet.paths import dataset_folder_name, raw_root

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def read_npz(path):
    """(channels as (S, H, W) arrays, labels (S, H, W) or None, geometry, uint8) of one file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SamunetError(f"{path}: cannot be read as an .npz file ({type(err).__name__})") from None
    if "imgs" not in arrays:
        raise SamunetError(f"{path}: no `imgs` array (keys: {', '.join(arrays) or 'none'})")
    imgs, gts = arrays["imgs"], arrays.get("gts")
    if imgs.ndim == 2:
        channels, spatial = [imgs[None]], imgs.shape
    elif imgs.ndim == 3 and imgs.shape[2] == 3 and (gts is None or gts.ndim == 2):
        channels, spatial = [imgs[None, ..., c] for c in range(3)], imgs.shape[:2]
    elif imgs.ndim == 3:
        channels, spatial = [imgs], imgs.shape
    else:
        raise SamunetError(f"{path}: `imgs` has shape {imgs.shape}; expected (D, H, W), (H, W) or (H, W, 3)")
    if gts is not None:
        if tuple(gts.shape) != tuple(spatial):
            raise SamunetError(f"{path}: `gts` has shape {gts.shape}, `imgs` {imgs.shape}")
        if not np.issubdtype(gts.dtype, np.integer) and not np.array_equal(gts, np.round(gts)):
            raise SamunetError(f"{path}: `gts` holds non-integer values")
        if gts.min() < 0:
            raise SamunetError(f"{path}: `gts` holds negative values")
        gts = gts.reshape(channels[0].shape).astype(np.uint8 if gts.max() < 256 else np.uint16)
    is_3d = len(spatial) == 3
    if "spacing" in arrays:
        spacing = [float(v) for v in np.ravel(arrays["spacing"])]
        if len(spacing) != (3 if is_3d else 2) or min(spacing) <= 0:
            raise SamunetError(f"{path}: `spacing` {spacing} is not {3 if is_3d else 2} positive numbers")
        geometry = Geometry(tuple(spacing) if is_3d else (*spacing, 999.0), (0.0, 0.0, 0.0), IDENTITY)
    else:
        geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY) if is_3d else GEOMETRY_2D
    return channels, gts, geometry, imgs.dtype == np.uint8


def convert_npz(folder, dataset_id, name, class_names=None):
    folder = Path(folder)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: folder not found")
    files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise SamunetError(f"{folder}: no .npz files")
    kinds, max_label, training, tests = set(), 0, 0, 0
    num_channels = None
    with staged_dataset(raw_root(), dataset_id, name) as staging:
        for path in files:
            channels, labels, geometry, uint8 = read_npz(path)
            if num_channels is None:
                num_channels = len(channels)
            elif len(channels) != num_channels:
                raise SamunetError(f"{path}: {len(channels)} channel(s), earlier files have {num_channels}")
            kinds.add(uint8)
            if len(kinds) > 1:
                raise SamunetError(f"{path}: `imgs` is {'' if uint8 else 'not '}uint8 0..255, unlike earlier files "
                                   "(one normalisation serves the dataset)")
            images_dir = "imagesTr" if labels is not None else "imagesTs"
            for c, channel in enumerate(channels):
                write_image(channel, geometry, staging / images_dir / f"{path.stem}_{c:04d}.nii.gz")
            if labels is not None:
                write_image(labels, geometry, staging / "labelsTr" / f"{path.stem}.nii.gz")
                max_label, training = max(max_label, int(labels.max())), training + 1
            else:
                tests += 1
        if not training:
            raise SamunetError(f"{folder}: no file has `gts`: nothing to train on")
        labels = class_labels(class_names, max_label, folder)
        channel_name = "rgb_to_0_1" if kinds == {True} else "image"
        write_dataset_json(staging, {c: channel_name for c in range(num_channels)}, labels, training, ".nii.gz",
                           converted_from=f"MedSAM .npz files in {folder}")
    final = raw_root() / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({training} training cases, {tests} test cases)")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert MedSAM / LiteMedSAM .npz files (imgs, gts, spacing) "
                                                 "into an nnU-Net v2 dataset.")
    parser.add_argument("-i", required=True, help="folder of {case}.npz files")
    add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    convert_npz(args.i, args.d, args.n, args.class_names)
