"""`samunet_convert_csv -i LIST.csv -d ID -n NAME [--root DIR]`: finetune-SAM's image/mask list -> nnU-Net v2 dataset.

finetune-SAM lists its training pairs one per line, `image_path,mask_path`; its README says the two are
tab-separated and its code splits on commas: a file may use either (the first line decides; a line without
it is an error naming the line). A first line whose two fields are not files is a header and skipped.
Paths are relative to --root (default: the list's folder). Masks hold class indices, or 0/255 for one class.

Slices of one volume are grouped back into a volume when their names say so: `{case}_slice_{n}` (also
`{case}-slice{n}`, any case), or the names --group-pattern matches (a regular expression with the named
groups `case` and `index`). A group must hold equal-sized slices numbered without gaps; it is stacked in
slice order with spacing 1 x 1 x 1 (a PNG carries none). Every other image is a one-slice case (nnU-Net's
2D convention, slice spacing 999). Images whose channels are all equal in every image become one grey
channel; otherwise three (`rgb_to_0_1`, /255).
"""
import argparse
import re
from pathlib import Path

import numpy as np

from samunet.dataset_conversion.channel_writer import ChannelWriter
from samunet.dataset_conversion.dataset_writer import (add_dataset_arguments, class_labels, staged_dataset,
                                                        write_dataset_json)
from samunet.dataset_conversion.image_files import GEOMETRY_2D, mask_to_labels, read_2d
from samunet.errors import SamunetError, cli_entry
from samunet.imageio import Geometry, write_image
from samunet.paths import dataset_folder_name, raw_root

SLICE_NAME = r"(?i)^(?P<case>.+?)[_-]slice[_-]?(?P<index>\d+)$"
GEOMETRY_3D = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))


def read_pairs(list_file, root):
    """[(image path, mask path)] from the list; the separator is the first line's (tab or comma)."""
    try:
        lines = [ln.strip() for ln in Path(list_file).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise SamunetError(f"{list_file}: cannot be read as a text list ({type(err).__name__})") from None
    lines = [(n, ln) for n, ln in enumerate(lines, start=1) if ln]
    if not lines:
        raise SamunetError(f"{list_file}: empty")
    first = lines[0][1]
    separator = "\t" if "\t" in first else "," if "," in first else None
    if separator is None:
        raise SamunetError(f"{list_file}: line 1 has neither a tab nor a comma between image and mask path")
    pairs = []
    for number, line in lines:
        fields = [f.strip() for f in line.split(separator)]
        if len(fields) != 2 or not all(fields):
            raise SamunetError(f"{list_file}: line {number} is not image{'<tab>' if separator == chr(9) else ','}mask")
        paths = [Path(f) if Path(f).is_absolute() else root / f for f in fields]
        if number == lines[0][0] and not any(p.is_file() for p in paths):
            continue  # a header
        for path in paths:
            if not path.is_file():
                raise SamunetError(f"{list_file}: line {number}: {path} not found")
        pairs.append(tuple(paths))
    if not pairs:
        raise SamunetError(f"{list_file}: lists no image/mask pairs")
    return pairs


def group_cases(pairs, pattern):
    """{case id: [(index, image, mask), ...] in slice order}; ungrouped images are their own one-slice case."""
    regex = re.compile(pattern)
    cases = {}
    for image, mask in pairs:
        match = regex.match(image.stem)
        key, index = (match["case"], int(match["index"])) if match else (image.stem, None)
        cases.setdefault(key, []).append((index, image, mask))
    for case, slices in cases.items():
        if len(slices) > 1 and any(i is None for i, _, _ in slices):
            raise SamunetError(f"{slices[1][1]}: the case name {case} is taken by another image")
        indices = sorted(i for i, _, _ in slices if i is not None)
        if indices and indices != list(range(indices[0], indices[0] + len(indices))):
            missing = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
            duplicate = sorted({i for i in indices if indices.count(i) > 1})
            what = f"slice(s) {', '.join(map(str, duplicate[:5]))} listed twice" if duplicate else \
                f"slice(s) {', '.join(map(str, missing[:5]))} missing"
            raise SamunetError(f"case {case} ({slices[0][1].parent}): {what}")
        slices.sort(key=lambda s: -1 if s[0] is None else s[0])
    return cases


def convert_csv(list_file, dataset_id, name, root=None, pattern=SLICE_NAME, class_names=None):
    list_file = Path(list_file)
    if not list_file.is_file():
        raise SamunetError(f"{list_file}: list file not found")
    root = Path(root) if root else list_file.parent
    cases = group_cases(read_pairs(list_file, root), pattern)
    writer = ChannelWriter()
    max_label, volumes = 0, 0
    with staged_dataset(raw_root(), dataset_id, name) as staging:
        for case, slices in sorted(cases.items()):
            images, labels = [], []
            for _, image_path, mask_path in slices:
                image = read_2d(image_path, "image")
                mask = mask_to_labels(read_2d(mask_path, "mask"), mask_path)
                if mask.shape != image.shape[:2]:
                    raise SamunetError(f"{mask_path}: size {mask.shape[::-1]} differs from its image's "
                                       f"{image.shape[1::-1]}")
                if images and image.shape[:2] != images[0].shape[:2]:
                    raise SamunetError(f"{image_path}: size {image.shape[1::-1]} differs from the other slices of "
                                       f"case {case} ({images[0].shape[1::-1]})")
                images.append(image)
                labels.append(mask)
            geometry = GEOMETRY_3D if len(slices) > 1 else GEOMETRY_2D
            volumes += len(slices) > 1
            writer.write(images, geometry, staging / "imagesTr", case)
            label_volume = np.stack(labels)
            max_label = max(max_label, int(label_volume.max()))
            write_image(label_volume, geometry, staging / "labelsTr" / f"{case}.nii.gz")
        labels = class_labels(class_names, max_label, list_file)
        write_dataset_json(staging, {c: "rgb_to_0_1" for c in range(writer.num_channels)}, labels, len(cases),
                           ".nii.gz", converted_from=f"image/mask list {list_file}")
    final = raw_root() / dataset_folder_name(dataset_id, name)
    print(f"wrote {final} ({len(cases)} cases: {volumes} volume(s) grouped from slices, "
          f"{len(cases) - volumes} single image(s))")
    return final


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert finetune-SAM's list of image,mask pairs (CSV or tab "
                                                 "separated) into an nnU-Net v2 dataset.")
    parser.add_argument("-i", required=True, help="the list file")
    add_dataset_arguments(parser)
    parser.add_argument("--root", default=None, help="folder the listed paths are relative to (default: the list's)")
    parser.add_argument("--group-pattern", default=SLICE_NAME,
                        help="regular expression on file names (without suffix) with groups `case` and `index`: "
                             "matching images are slices of one volume (default: {case}_slice_{n})")
    args = parser.parse_args(argv)
    try:
        re.compile(args.group_pattern)
    except re.error as err:
        raise SamunetError(f"--group-pattern: not a regular expression ({err})") from None
    if not {"case", "index"} <= set(re.compile(args.group_pattern).groupindex):
        raise SamunetError("--group-pattern: needs the named groups (?P<case>...) and (?P<index>...)")
    convert_csv(args.i, args.d, args.n, args.root, args.group_pattern, args.class_names)
