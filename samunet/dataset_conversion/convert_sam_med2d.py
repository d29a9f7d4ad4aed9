"""`samunet_convert_sam_med2d -i FOLDER -d ID [-n NAME]`: a dataset in SAM-Med2D's layout -> nnU-Net v2 dataset.

SAM-Med2D (SA-Med2D-20M) keeps one binary mask per object:
    FOLDER/images/{image}.png
    FOLDER/masks/{image}_{class}_{instance:03d}.png       (0/255 or 0/1)
    FOLDER/image2label_train.json   {"<image path>": ["<mask path>", ...], ...}
    FOLDER/label2image_test.json    {"<mask path>": "<image path>", ...}       (optional: test cases)
Listed paths are taken relative to FOLDER's parent (as SAM-Med2D writes them, e.g. "data_demo/images/x.png"),
else relative to FOLDER. Each image becomes a one-slice case; its masks become one label map. The class is
the mask name between the image name and the instance number; class ids are the class names in sorted order
over the whole dataset (1..K, listed in dataset.json), so every case uses the same ids. Overlapping masks
of different classes: the smaller mask wins the overlap (a structure inside another keeps its voxels);
the number of images and pixels this decided is printed. Instances of one class are united. Images whose
channels are all equal in every image become one grey channel; otherwise three (`rgb_to_0_1`, /255).
Test images go to imagesTs/ and their label maps to labelsTs/.
"""
import argparse
import re
from pathlib import Path

import numpy as np

from samunet.dataset_conversion.channel_writer import ChannelWriter
from samunet.dataset_conversion.dataset_writer import (add_dataset_arguments, class_labels, staged_dataset,
                                                       write_dataset_json)
from samunet.dataset_conversion.image_files import GEOMETRY_2D, read_2d
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import read_json
from samunet.imageio import write_image
from samunet.paths import dataset_folder_name, raw_root

TRAIN_LIST, TEST_LIST = "image2label_train.json", "label2image_test.json"
INSTANCE = re.compile(r"^(?P<cls>.+)_(?P<instance>\d+)$")


def _listed_path(folder, listed, list_file):
    path = Path(listed)
    for candidate in ((path,) if path.is_absolute() else (folder.parent / path, folder / path)):
        if candidate.is_file():
            return candidate
    raise SamunetError(f"{folder / list_file}: lists {listed}, which is not there")


def _class_of(mask, image):
    stem = Path(mask).stem
    match = INSTANCE.match(stem[len(image.stem) + 1:]) if stem.startswith(image.stem + "_") else None
    if not match:
        raise SamunetError(f"{mask}: not named {image.stem}_<class>_<instance>.png after its image {image.name}")
    return match["cls"]


def read_lists(folder):
    """{image path: [(class name, mask path), ...]} for the training and the test list."""
    if not (folder / TRAIN_LIST).is_file():
        raise SamunetError(f"{folder}: no {TRAIN_LIST} (not a SAM-Med2D dataset folder)")
    train_json = read_json(folder / TRAIN_LIST)
    if not isinstance(train_json, dict) or not all(isinstance(v, list) for v in train_json.values()):
        raise SamunetError(f"{folder / TRAIN_LIST}: not an object of image path -> list of mask paths")
    lists = {"train": {}, "test": {}}
    for image, masks in train_json.items():
        image_path = _listed_path(folder, image, TRAIN_LIST)
        lists["train"][image_path] = [(_class_of(m, image_path), _listed_path(folder, m, TRAIN_LIST)) for m in masks]
    if (folder / TEST_LIST).is_file():
        test_json = read_json(folder / TEST_LIST)
        if not isinstance(test_json, dict) or not all(isinstance(v, str) for v in test_json.values()):
            raise SamunetError(f"{folder / TEST_LIST}: not an object of mask path -> image path")
        for mask, image in test_json.items():
            image_path = _listed_path(folder, image, TEST_LIST)
            entry = (_class_of(mask, image_path), _listed_path(folder, mask, TEST_LIST))
            lists["test"].setdefault(image_path, []).append(entry)
    if not lists["train"]:
        raise SamunetError(f"{folder / TRAIN_LIST}: lists no images")
    return lists


def label_map(shape, masks, class_ids):
    """One label map from binary masks; overlaps of different classes go to the smaller mask.
    Returns (labels, pixels decided by the overlap rule)."""
    per_class = {}
    for name, path in masks:
        mask = read_2d(path, "mask")
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != shape:
            raise SamunetError(f"{path}: size {mask.shape[::-1]} differs from its image's {shape[::-1]}")
        per_class[name] = per_class.get(name, np.zeros(shape, bool)) | (mask > 0)
    labels = np.zeros(shape, np.uint8 if len(class_ids) < 256 else np.uint16)
    covered = np.zeros(shape, np.int32)
    for name, mask in sorted(per_class.items(), key=lambda kv: -int(kv[1].sum())):  # largest first
        labels[mask] = class_ids[name]  # smaller masks, written later, win
        covered += mask
    return labels, int((covered > 1).sum())


def convert_sam_med2d(folder, dataset_id, name=None):
    folder = Path(folder)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: folder not found")
    name = name or re.sub(r"\W", "", folder.name) or "SAMMed2D"
    lists = read_lists(folder)
    classes = sorted({c for split in lists.values() for masks in split.values() for c, _ in masks})
    label_ids = class_labels(classes, len(classes), f"{folder} (mask names)")
    class_ids = {c: k for c, k in label_ids.items() if k}
    writer = ChannelWriter()
    overlap_images = overlap_pixels = 0
    cases = {}
    with staged_dataset(raw_root(), dataset_id, name) as staging:
        for split, (images_dir, labels_dir) in (("train", ("imagesTr", "labelsTr")), ("test", ("imagesTs", "labelsTs"))):
            for image_path, masks in sorted(lists[split].items()):
                case = image_path.stem
                if case in cases:
                    raise SamunetError(f"{image_path}: another listed image ({cases[case]}) has the same name")
                cases[case] = image_path
                image = read_2d(image_path, "image")
                labels, overlap = label_map(image.shape[:2], masks, class_ids)
                overlap_images, overlap_pixels = overlap_images + bool(overlap), overlap_pixels + overlap
                writer.write([image], GEOMETRY_2D, staging / images_dir, case)
                write_image(labels[None], GEOMETRY_2D, staging / labels_dir / f"{case}.nii.gz")
        num_channels = writer.num_channels
        write_dataset_json(staging, {c: "rgb_to_0_1" for c in range(num_channels)}, label_ids, len(lists["train"]),
                           ".nii.gz", converted_from=f"SAM-Med2D layout in {folder}",
                           overlap_rule="overlapping masks of different classes: the smaller mask wins")
    final = raw_root() / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({len(lists['train'])} training images, {len(lists['test'])} test images, "
          f"{len(classes)} classes, {num_channels} channel(s))")
    if overlap_pixels:
        print(f"{overlap_images} image(s) had overlapping masks of different classes ({overlap_pixels} pixels): "
              "the smaller mask kept them")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a dataset in SAM-Med2D's layout (images/, masks/, "
                                                 f"{TRAIN_LIST}) into an nnU-Net v2 dataset.")
    parser.add_argument("-i", required=True, help=f"folder with images/, masks/ and {TRAIN_LIST}")
    add_dataset_arguments(parser, name_required=False, class_names=False)
    args = parser.parse_args(argv)
    convert_sam_med2d(args.i, args.d, args.n)
