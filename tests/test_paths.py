import pytest

from samunet.errors import SamunetError
from samunet.paths import find_raw_dataset, parse_dataset_id, preprocessed_root, raw_root


def test_missing_variable_is_named(monkeypatch):
    monkeypatch.delenv("SAMUNET_PREPROCESSED", raising=False)
    with pytest.raises(SamunetError, match="SAMUNET_PREPROCESSED is not set"):
        preprocessed_root()


def test_raw_falls_back_to_nnunet_raw(monkeypatch, tmp_path):
    monkeypatch.delenv("SAMUNET_RAW", raising=False)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert raw_root() == tmp_path
    monkeypatch.delenv("nnUNet_raw")
    with pytest.raises(SamunetError, match=r"SAMUNET_RAW is not set \(nor nnUNet_raw\)"):
        raw_root()


def test_samunet_raw_wins_over_nnunet_raw(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMUNET_RAW", str(tmp_path / "a"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "b"))
    assert raw_root() == tmp_path / "a"


@pytest.mark.parametrize("text,expected", [("501", 501), ("Dataset007", 7), ("Dataset501_Hippo", 501), (4, 4)])
def test_parse_dataset_id(text, expected):
    assert parse_dataset_id(text) == expected


def test_parse_dataset_id_rejects_names():
    with pytest.raises(SamunetError, match="not a dataset id"):
        parse_dataset_id("Hippocampus")


def test_find_dataset(env):
    (env.raw / "Dataset501_A").mkdir()
    assert find_raw_dataset(501).name == "Dataset501_A"
    assert find_raw_dataset("Dataset501_A").name == "Dataset501_A"
    with pytest.raises(SamunetError, match="no folder Dataset502_"):
        find_raw_dataset(502)
    (env.raw / "Dataset501_B").mkdir()
    with pytest.raises(SamunetError, match="several folders for dataset 501"):
        find_raw_dataset(501)
