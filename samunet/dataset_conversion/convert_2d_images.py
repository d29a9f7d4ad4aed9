"""`samunet_convert_2d -i FOLDER -d ID -n NAME`: a folder of 2D images and masks -> nnU-Net v2 dataset.

FOLDER/images/{case}.png and FOLDER/masks/{case}.png (same names; optional FOLDER/imagesTs/). Each image
becomes a one-slice volume with nnU-Net's 2D convention (slice spacing 999, so the slicing axis is the
single slice). RGB images give three channels, grey images one, all normalised by /255 (`rgb_to_0_1`).
Masks hold class indices 0..K; a mask with only the values 0 and 255 is read as binary.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from samunet.dataset_conversion.dataset_writer import staged_dataset, write_dataset_json
from samunet.errors import SamunetError, cli_entry
from samunet.imageio import Geometry, write_image
from samunet.paths import dataset_folder_name, raw_root

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GEOMETRY_2D = Geometry((1.0, 1.0, 999.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def _read_2d(path, mode_name):
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except OSError as err:
        raise SamunetError(f"{path}: cannot be read as a {mode_name} ({err})") from None
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]  # drop alpha
    return arr


def _channels(arr):
    return [arr] if arr.ndim == 2 else [arr[..., c] for c in range(arr.shape[2])]


def _mask_to_labels(mask, path):
    if mask.ndim == 3:
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[2])):
            raise SamunetError(f"{path}: colour mask; masks must hold class indices in one channel")
        mask = mask[..., 0]
    values = set(np.unique(mask).tolist())
    if values <= {0, 255}:
        return (mask > 0).astype(np.uint8)
    return mask.astype(np.uint8)


def _image_files(folder):
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def convert_2d_folder(source, dataset_id, name, class_names=None):
    source = Path(source)
    images_dir, masks_dir = source / "images", source / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise SamunetError(f"{d}: folder not found (expected {source}/images and {source}/masks)")
    images = _image_files(images_dir)
    if not images:
        raise SamunetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = {p.stem: p for p in _image_files(masks_dir)}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise SamunetError(f"{masks_dir}: no mask for {', '.join(missing[:5])}")
    tests = _image_files(source / "imagesTs") if (source / "imagesTs").is_dir() else []

    num_channels, max_label = None, 0
    with staged_dataset(raw_root(), dataset_id, name) as staging:
        for image_path in images:
            channels = _channels(_read_2d(image_path, "image"))
            if num_channels is None:
                num_channels = len(channels)
            elif len(channels) != num_channels:
                raise SamunetError(f"{image_path}: has {len(channels)} channel(s), earlier images have {num_channels}")
            mask = _mask_to_labels(_read_2d(masks[image_path.stem], "mask"), masks[image_path.stem])
            if mask.shape != channels[0].shape:
                raise SamunetError(f"{masks[image_path.stem]}: shape {mask.shape} differs from its image {channels[0].shape}")
            max_label = max(max_label, int(mask.max()))
            for c, ch in enumerate(channels):
                write_image(ch[None], GEOMETRY_2D, staging / "imagesTr" / f"{image_path.stem}_{c:04d}.nii.gz")
            write_image(mask[None], GEOMETRY_2D, staging / "labelsTr" / f"{image_path.stem}.nii.gz")
        if tests:
            (staging / "imagesTs").mkdir()
            for path in tests:
                for c, ch in enumerate(_channels(_read_2d(path, "image"))):
                    write_image(ch[None], GEOMETRY_2D, staging / "imagesTs" / f"{path.stem}_{c:04d}.nii.gz")
        class_names = class_names or [f"class_{k}" for k in range(1, max_label + 1)]
        if len(class_names) < max_label:
            raise SamunetError(f"{masks_dir}: masks use labels up to {max_label} but only {len(class_names)} class name(s) given")
        labels = {"background": 0, **{n: k for k, n in enumerate(class_names, start=1)}}
        write_dataset_json(staging, {c: "rgb_to_0_1" for c in range(num_channels)}, labels, len(images), ".nii.gz",
                           converted_from=f"2D images in {source}")
    final = raw_root() / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({len(images)} training images, {len(tests)} test images)")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a folder of 2D images + masks into an nnU-Net v2 dataset.")
    parser.add_argument("-i", required=True, help="folder with images/ and masks/ (and optionally imagesTs/)")
    parser.add_argument("-d", type=int, required=True, help="dataset id")
    parser.add_argument("-n", required=True, help="dataset name")
    parser.add_argument("--class-names", nargs="+", help="names of mask values 1, 2, ... (default class_1, ...)")
    args = parser.parse_args(argv)
    convert_2d_folder(args.i, args.d, args.n, args.class_names)
