"""Writing a new raw dataset safely: into a hidden staging folder that is renamed into place at the end,
so a failed conversion leaves nothing behind and an existing dataset is never overwritten."""
import contextlib
import shutil
import uuid
from pathlib import Path

from samunet.errors import SamunetError
from samunet.file_io import write_json
from samunet.paths import dataset_folder_name


def refuse_existing_id(raw_root, dataset_id):
    existing = sorted(Path(raw_root).glob(f"Dataset{int(dataset_id):03d}_*"))
    if existing:
        raise SamunetError(f"{existing[0]}: dataset id {dataset_id} is taken; choose another id or remove it first")


@contextlib.contextmanager
def staged_dataset(raw_root, dataset_id, name):
    """Yield a staging folder with imagesTr/ and labelsTr/; on success it becomes DatasetXXX_Name."""
    raw_root = Path(raw_root)
    final = raw_root / dataset_folder_name(dataset_id, name)
    refuse_existing_id(raw_root, dataset_id)
    staging = raw_root / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"  # unique: conversions may run at once
    (staging / "imagesTr").mkdir(parents=True)
    (staging / "labelsTr").mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        refuse_existing_id(raw_root, dataset_id)  # another conversion may have finished meanwhile
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_dataset_json(folder, channel_names, labels, num_training, file_ending, **extra):
    """nnU-Net v2 dataset.json."""
    write_json(
        {
            "channel_names": {str(k): v for k, v in channel_names.items()},
            "labels": labels,
            "numTraining": num_training,
            "file_ending": file_ending,
            **extra,
        },
        Path(folder) / "dataset.json",
    )


def class_labels(class_names, max_label, source):
    """dataset.json `labels`: background 0, then the given names (default class_1, ...) for 1..max_label."""
    names = class_names or [f"class_{k}" for k in range(1, max_label + 1)]
    if len(names) < max_label:
        raise SamunetError(f"{source}: label values go up to {max_label} but only {len(names)} class name(s) given")
    if "background" in names:
        raise SamunetError(f"{source}: a class named 'background': that name is label 0's; rename the class")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SamunetError(f"{source}: class name(s) {', '.join(repeated)} given twice; each label needs its own")
    return {"background": 0, **{n: k for k, n in enumerate(names, start=1)}}


def add_dataset_arguments(parser, name_required=True, class_names=True):
    """-d ID, -n NAME (and --class-names) as every converter takes them."""
    parser.add_argument("-d", type=int, required=True, help="dataset id")
    parser.add_argument("-n", required=name_required, default=None,
                        help="dataset name" if name_required else "dataset name (default: the folder's name)")
    if class_names:
        parser.add_argument("--class-names", nargs="+", help="names of label values 1, 2, ... (default class_1, ...)")
