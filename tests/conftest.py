import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from samunet.dataset_conversion.synthetic import generate_synthetic_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}"
)


def hippocampus_subset(folder, cases):
    """An MSD Task04_Hippocampus folder under `folder` with only `cases` (copies: the converter refuses
    entries that resolve outside the task folder), so that a test converts the cases it uses, not all 200."""
    source = SHARED_DATA / "Task04_Hippocampus"
    task = Path(folder) / source.name
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = [e for e in meta["training"] if Path(e["image"]).name.removesuffix(".nii.gz") in cases]
    assert len(meta["training"]) == len(cases), "a case the test names is not in the task"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
        for case in cases:
            shutil.copyfile(source / sub / f"{case}.nii.gz", task / sub / f"{case}.nii.gz")
    (task / "dataset.json").write_text(json.dumps(dict(meta, numTraining=len(cases), test=[])))
    return task


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fresh raw/preprocessed/results folders in the environment, no nnU-Net or checkpoint variables."""
    folders = SimpleNamespace(
        raw=tmp_path / "raw", preprocessed=tmp_path / "preprocessed", results=tmp_path / "results"
    )
    monkeypatch.setenv("SAMUNET_RAW", str(folders.raw))
    monkeypatch.setenv("SAMUNET_PREPROCESSED", str(folders.preprocessed))
    monkeypatch.setenv("SAMUNET_RESULTS", str(folders.results))
    for var in ("nnUNet_raw", "SAMUNET_CHECKPOINTS"):
        monkeypatch.delenv(var, raising=False)
    folders.raw.mkdir()
    return folders


@pytest.fixture
def make_dataset(env):
    """Factory: make_dataset(dataset_id, **generate_synthetic_dataset kwargs) -> raw dataset folder."""

    def make(dataset_id=990, **kwargs):
        kwargs.setdefault("num_cases", 4)
        kwargs.setdefault("shape", (8, 28, 24))
        return generate_synthetic_dataset(env.raw, dataset_id, **kwargs)

    return make


def files_under(folder):
    """Everything under `folder` but the lock files beside dataset folders (file_io.folder_lock)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock"))
