"""A raw dataset in nnU-Net v2 layout: dataset.json plus imagesTr/{case}_{XXXX}{ending} and labelsTr/{case}{ending}."""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.imageio import SUPPORTED_ENDINGS


@dataclass
class RawCase:
    case_id: str
    images: list  # one path per channel, in channel order
    label: Path = None


@dataclass
class RawDataset:
    folder: Path
    dataset_json: dict
    channel_names: dict  # channel index (int) -> name, e.g. {0: "CT"}
    labels: dict  # name -> int, background 0 included
    file_ending: str
    cases: dict = field(default_factory=dict)  # case id -> RawCase

    @property
    def name(self):
        return self.folder.name

    def source_stamp(self):
        """Hash of every input file's name, size and modification time: changes when the data change."""
        h = hashlib.sha256()
        for case in self.cases.values():
            for p in [*case.images, case.label]:
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return h.hexdigest()


def _visible_files(folder):
    # macOS resource forks (._name) and other hidden files are not data.
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def read_dataset_json(folder):
    path = folder / "dataset.json"
    meta = read_json(path)
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            hint = " (old MSD format? convert it with samunet_convert_msd)" if "modality" in meta else ""
            raise SamunetError(f"{path}: missing key '{key}'{hint}")
    try:
        channel_names = {int(k): str(v) for k, v in meta["channel_names"].items()}
    except (ValueError, AttributeError):
        raise SamunetError(f"{path}: 'channel_names' must map channel indices to names") from None
    if sorted(channel_names) != list(range(len(channel_names))) or not channel_names:
        raise SamunetError(f"{path}: 'channel_names' must number channels 0, 1, ... without gaps")
    labels = meta["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        raise SamunetError(f"{path}: 'labels' must map names to integers (region-based labels are not supported)")
    if labels.get("background") != 0:
        raise SamunetError(f"{path}: 'labels' must contain \"background\": 0")
    values = sorted(labels.values())
    if values != list(range(len(values))):
        raise SamunetError(f"{path}: label values must be consecutive integers 0..N, got {values}")
    ending = meta["file_ending"]
    if ending not in SUPPORTED_ENDINGS:
        raise SamunetError(f"{path}: file_ending '{ending}' is not one of {', '.join(SUPPORTED_ENDINGS)}")
    return meta, channel_names, dict(labels), ending


def load_raw_dataset(folder, images_subfolder="imagesTr", labels_subfolder="labelsTr"):
    """Read dataset.json and match image and label files; one-line errors for anything missing or misnamed."""
    folder = Path(folder)
    meta, channel_names, labels, ending = read_dataset_json(folder)
    images_dir, labels_dir = folder / images_subfolder, folder / labels_subfolder
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise SamunetError(f"{d}: folder not found")

    for d in (images_dir, labels_dir):
        for p in _visible_files(d):
            if not p.name.endswith(ending):
                raise SamunetError(f"{p}: file ending differs from dataset.json's file_ending '{ending}'")

    num_channels = len(channel_names)
    case_ids = sorted({p.name[: -len(ending)][:-5] for p in _visible_files(images_dir)})
    cases = {}
    for case_id in case_ids:
        images = [images_dir / f"{case_id}_{c:04d}{ending}" for c in range(num_channels)]
        missing = [p.name for p in images if not p.is_file()]
        if missing:
            raise SamunetError(f"{images_dir}: case {case_id} lacks channel file(s) {', '.join(missing)}")
        label = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            raise SamunetError(f"{labels_dir}: case {case_id} has no label file {label.name}")
        cases[case_id] = RawCase(case_id, images, label)
    extra_labels = sorted({p.name[: -len(ending)] for p in _visible_files(labels_dir)} - set(cases))
    if extra_labels:
        raise SamunetError(f"{labels_dir}: label(s) without images: {', '.join(extra_labels[:5])}")
    if not cases:
        raise SamunetError(f"{images_dir}: no images named {{case}}_0000{ending}")
    if "numTraining" in meta and meta["numTraining"] != len(cases):
        raise SamunetError(
            f"{folder / 'dataset.json'}: numTraining is {meta['numTraining']} but {images_dir} holds {len(cases)} cases"
        )
    return RawDataset(folder, meta, channel_names, labels, ending, cases)
