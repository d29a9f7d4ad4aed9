"""Where datasets, preprocessed data and results live (environment variables, nnU-Net style)."""
import os
import re
from pathlib import Path

from samunet.errors import SamunetError

RAW_VAR = "SAMUNET_RAW"
PREPROCESSED_VAR = "SAMUNET_PREPROCESSED"
RESULTS_VAR = "SAMUNET_RESULTS"
# Users' existing nnU-Net v2 raw datasets work unchanged: read them where nnU-Net keeps them.
NNUNET_RAW_VAR = "nnUNet_raw"


def _folder_from_env(var, fallback=None):
    value = os.environ.get(var) or (os.environ.get(fallback) if fallback else None)
    if not value:
        hint = f" (nor {fallback})" if fallback else ""
        raise SamunetError(f"environment variable {var} is not set{hint}: export {var}=/path/to/folder")
    return Path(value)


def raw_root():
    return _folder_from_env(RAW_VAR, NNUNET_RAW_VAR)


def preprocessed_root():
    return _folder_from_env(PREPROCESSED_VAR)


def results_root():
    return _folder_from_env(RESULTS_VAR)


def dataset_folder_name(dataset_id, name):
    """`DatasetXXX_Name`; the name (from a command line or a file) must be a plain name, never a path."""
    return f"Dataset{int(dataset_id):03d}_{plain_name(name, 'dataset name')}"


def parse_dataset_id(text):
    """Accept `501`, `Dataset501` or `Dataset501_Name` and return the integer id."""
    match = re.fullmatch(r"(?:Dataset)?0*(\d+)(?:_.*)?", str(text))
    if not match:
        raise SamunetError(f"'{text}' is not a dataset id (expected e.g. 501 or Dataset501_Name)")
    return int(match.group(1) or 0)


def find_dataset(root, dataset_id):
    """The folder `DatasetXXX_*` inside `root` for this id; one-line errors when absent or ambiguous."""
    dataset_id = parse_dataset_id(dataset_id)
    root = Path(root)
    if not root.is_dir():
        raise SamunetError(f"{root}: folder does not exist")
    matches = sorted(p for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())
    if not matches:
        raise SamunetError(f"{root}: no folder Dataset{dataset_id:03d}_* for dataset {dataset_id}")
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise SamunetError(f"{root}: several folders for dataset {dataset_id}: {names}")
    return matches[0]


def find_raw_dataset(dataset_id):
    return find_dataset(raw_root(), dataset_id)


def preprocessed_dataset_folder(dataset_id):
    """Preprocessed folder named like the raw dataset (the raw folder decides the name)."""
    return preprocessed_root() / find_raw_dataset(dataset_id).name


def find_preprocessed_dataset(dataset_id):
    return find_dataset(preprocessed_root(), dataset_id)


def plain_name(name, what):
    """A name used as a folder name (never a path): letters, digits, '_' and '-'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(name)):
        raise SamunetError(f"{what} '{name}': use letters, digits, '_' and '-' only")
    return str(name)
