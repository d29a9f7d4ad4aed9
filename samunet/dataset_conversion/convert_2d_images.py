"""`samunet_convert_2d -i FOLDER -d ID -n NAME`: a folder of 2D images and masks -> nnU-Net v2 dataset.

FOLDER/images/{case}.png and FOLDER/masks/{case}.png (same names; optional FOLDER/imagesTs/). Each image
becomes a one-slice volume with nnU-Net's 2D convention (slice spacing 999, so the slicing axis is the
single slice). RGB images give three channels, grey images one, all normalised by /255 (`rgb_to_0_1`).
Masks hold class indices 0..K; a mask with only the values 0 and 255 is read as binary.
"""
import argparse
from pathlib import Path

from samunet.dataset_conversion.dataset_writer import (add_dataset_arguments, class_labels, staged_dataset,
                                                        write_dataset_json)
from samunet.dataset_conversion.image_files import (GEOMETRY_2D, IMAGE_SUFFIXES, image_files, mask_to_labels,
                                                    read_2d, split_channels)
from samunet.errors import SamunetError, cli_entry
from samunet.imageio import write_image
from samunet.paths import dataset_folder_name, raw_root

def convert_2d_folder(source, dataset_id, name, class_names=None):
    source = Path(source)
    images_dir, masks_dir = source / "images", source / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise SamunetError(f"{d}: folder not found (expected {source}/images and {source}/masks)")
    images = image_files(images_dir)
    if not images:
        raise SamunetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = {p.stem: p for p in image_files(masks_dir)}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise SamunetError(f"{masks_dir}: no mask for {', '.join(missing[:5])}")
    tests = image_files(source / "imagesTs") if (source / "imagesTs").is_dir() else []

    num_channels, max_label = None, 0
    with staged_dataset(raw_root(), dataset_id, name) as staging:
        for image_path in images:
            channels = split_channels(read_2d(image_path, "image"))
            if num_channels is None:
                num_channels = len(channels)
            elif len(channels) != num_channels:
                raise SamunetError(f"{image_path}: has {len(channels)} channel(s), earlier images have {num_channels}")
            mask = mask_to_labels(read_2d(masks[image_path.stem], "mask"), masks[image_path.stem])
            if mask.shape != channels[0].shape:
                raise SamunetError(f"{masks[image_path.stem]}: shape {mask.shape} differs from its image {channels[0].shape}")
            max_label = max(max_label, int(mask.max()))
            for c, ch in enumerate(channels):
                write_image(ch[None], GEOMETRY_2D, staging / "imagesTr" / f"{image_path.stem}_{c:04d}.nii.gz")
            write_image(mask[None], GEOMETRY_2D, staging / "labelsTr" / f"{image_path.stem}.nii.gz")
        if tests:
            (staging / "imagesTs").mkdir()
            for path in tests:
                for c, ch in enumerate(split_channels(read_2d(path, "image"))):
                    write_image(ch[None], GEOMETRY_2D, staging / "imagesTs" / f"{path.stem}_{c:04d}.nii.gz")
        labels = class_labels(class_names, max_label, masks_dir)
        write_dataset_json(staging, {c: "rgb_to_0_1" for c in range(num_channels)}, labels, len(images), ".nii.gz",
                           converted_from=f"2D images in {source}")
    final = raw_root() / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({len(images)} training images, {len(tests)} test images)")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a folder of 2D images + masks into an nnU-Net v2 dataset.")
    parser.add_argument("-i", required=True, help="folder with images/ and masks/ (and optionally imagesTs/)")
    add_dataset_arguments(parser)
    args = parser.parse_args(argv)
    convert_2d_folder(args.i, args.d, args.n, args.class_names)
