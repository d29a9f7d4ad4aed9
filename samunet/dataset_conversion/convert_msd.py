"""`samunet_convert_msd -i TaskXX_Name [-overwrite_id ID]`: Medical Segmentation Decathlon -> nnU-Net v2 layout.

MSD stores multi-channel images as 4D NIfTI and describes them in an old dataset.json (`modality`, `labels`
index -> name, `training` list). Each 4D image becomes one 3D file per channel with the 3D part of its
geometry; 3D images and labels are copied byte for byte.
"""
import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samunet.dataset_conversion.dataset_writer import staged_dataset, write_dataset_json
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import read_json
from samunet.parallel import add_num_processes_argument, map_with_progress
from samunet.paths import dataset_folder_name, raw_root


def split_msd_image(source, target_dir, case_id):
    """Write `{case_id}_{c:04d}.nii.gz` for each channel of `source`; returns the number of channels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise SamunetError(f"{source}: cannot be read as a NIfTI image") from None
    if reader.GetDimension() == 3:
        shutil.copyfile(source, target_dir / f"{case_id}_0000.nii.gz")
        return 1
    if reader.GetDimension() != 4:
        raise SamunetError(f"{source}: {reader.GetDimension()}D image; MSD images are 3D or 4D")
    img = sitk.ReadImage(str(source))
    arr = sitk.GetArrayFromImage(img)  # (c, z, y, x)
    direction = np.array(img.GetDirection()).reshape(4, 4)[:3, :3].ravel()
    for c in range(arr.shape[0]):
        out = sitk.GetImageFromArray(arr[c])
        out.SetSpacing(img.GetSpacing()[:3])
        out.SetOrigin(img.GetOrigin()[:3])
        out.SetDirection(direction.tolist())
        sitk.WriteImage(out, str(target_dir / f"{case_id}_{c:04d}.nii.gz"), useCompression=True)
    return arr.shape[0]


def _convert_one(job):
    image, label, images_dir, labels_dir = job
    case_id = image.name[: -len(".nii.gz")]
    channels = split_msd_image(image, images_dir, case_id)
    if label is not None:
        shutil.copyfile(label, labels_dir / f"{case_id}.nii.gz")
    return channels


def _listed_file(task_folder, entry, key):
    """The file a `training` entry names: a relative path inside the task folder ending in .nii.gz."""
    meta_path = task_folder / "dataset.json"
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, str) or not value.endswith(".nii.gz"):
        raise SamunetError(f"{meta_path}: 'training' entry {entry!r}: '{key}' must name a .nii.gz file")
    path = (task_folder / value).resolve()
    if Path(value).is_absolute() or not path.is_relative_to(task_folder.resolve()):
        raise SamunetError(f"{meta_path}: '{key}' {value} lies outside {task_folder}; entries must be inside the task folder")
    if not path.is_file():
        raise SamunetError(f"{meta_path}: lists {value}, which does not exist")
    return path


def _msd_cases(task_folder, meta):
    entries = meta.get("training", [])
    if not isinstance(entries, list):
        raise SamunetError(f"{task_folder / 'dataset.json'}: 'training' must be a list")
    images = [_listed_file(task_folder, e, "image") for e in entries]
    labels = [_listed_file(task_folder, e, "label") for e in entries]
    return images, labels


def convert_msd(task_folder, dataset_id=None, num_processes=1):
    task_folder = Path(task_folder)
    meta_path = task_folder / "dataset.json"
    meta = read_json(meta_path)
    if "modality" not in meta or "labels" not in meta:
        raise SamunetError(f"{meta_path}: not an MSD dataset.json (needs 'modality' and 'labels')")
    match = re.fullmatch(r"Task0*(\d+)_(.+)", task_folder.name)
    if not match:
        raise SamunetError(f"{task_folder}: MSD folders are named TaskXX_Name")
    dataset_id = int(dataset_id if dataset_id is not None else match.group(1))
    name = match.group(2)
    try:
        labels = {str(n): int(i) for i, n in meta["labels"].items()}
        channel_names = {int(i): str(n) for i, n in meta["modality"].items()}
    except (ValueError, AttributeError):
        raise SamunetError(f"{meta_path}: 'labels' and 'modality' must map indices to names") from None
    images, label_files = _msd_cases(task_folder, meta)
    if not images:
        raise SamunetError(f"{meta_path}: the 'training' list is empty")
    tests = sorted(p for p in (task_folder / "imagesTs").glob("*.nii.gz") if not p.name.startswith("."))

    root = raw_root()
    with staged_dataset(root, dataset_id, name) as staging:
        jobs = [(i, l, staging / "imagesTr", staging / "labelsTr") for i, l in zip(images, label_files)]
        if tests:
            (staging / "imagesTs").mkdir()
            jobs += [(t, None, staging / "imagesTs", None) for t in tests]
        channels = set(map_with_progress(_convert_one, jobs, num_processes, desc="converting"))
        if channels != {len(channel_names)}:
            raise SamunetError(f"{meta_path}: 'modality' lists {len(channel_names)} channel(s) but images have {sorted(channels)}")
        extra = {k: meta[k] for k in ("name", "description", "reference", "licence", "release") if k in meta}
        write_dataset_json(staging, channel_names, labels, len(images), ".nii.gz",
                           converted_from=f"MSD {task_folder.name}", **extra)
    final = root / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({len(images)} training cases, {len(tests)} test images)")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert a Medical Segmentation Decathlon task to nnU-Net v2 layout.")
    parser.add_argument("-i", required=True, help="the TaskXX_Name folder")
    parser.add_argument("-overwrite_id", type=int, default=None, help="dataset id to use instead of the task number")
    add_num_processes_argument(parser)
    args = parser.parse_args(argv)
    folder = Path(args.i)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: folder not found")
    convert_msd(folder, args.overwrite_id, args.np)
