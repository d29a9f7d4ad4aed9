from pathlib import Path
from types import SimpleNamespace

import pytest

from samunet.dataset_conversion.synthetic import generate_synthetic_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}"
)


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
