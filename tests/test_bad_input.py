"""Every bad input gives a one-line error naming the case (or file) and the problem, and writes nothing."""
import json
import shutil

import numpy as np
import pytest

from samunet.imageio import Geometry, read_image, write_image
from samunet.plan_and_preprocess import main as plan_and_preprocess

from conftest import files_under

CASE = "synthetic_001"


def _rewrite(path, array=None, **geometry_changes):
    arr, geom = read_image(path)
    fields = geom.to_dict()
    fields.update(geometry_changes)
    write_image(arr if array is None else array, Geometry.from_dict(fields), path)


def _files(folder, case=CASE):
    ending = json.loads((folder / "dataset.json").read_text())["file_ending"]
    return folder / "imagesTr" / f"{case}_0000{ending}", folder / "labelsTr" / f"{case}{ending}"


def shape_mismatch(folder):
    label = folder / "labelsTr" / f"{CASE}.nii.gz"
    arr, _ = read_image(label)
    _rewrite(label, array=arr[:-1])
    return "has shape"


def spacing_mismatch(folder):
    _rewrite(folder / "labelsTr" / f"{CASE}.nii.gz", spacing=[0.5, 0.8, 4.0])
    return "spacing"


def origin_mismatch(folder):
    _rewrite(folder / "labelsTr" / f"{CASE}.nii.gz", origin=[1.0, 2.0, 3.0])
    return "origin"


def direction_mismatch(folder):
    _rewrite(folder / "imagesTr" / f"{CASE}_0001.nii.gz", direction=[1, 0, 0, 0, 1, 0, 0, 0, 1])
    return "direction"


def missing_channel(folder):
    (folder / "imagesTr" / f"{CASE}_0001.nii.gz").unlink()
    return f"{CASE}_0001.nii.gz"


def missing_label(folder):
    (folder / "labelsTr" / f"{CASE}.nii.gz").unlink()
    return "has no label file"


def unknown_label_value(folder):
    label = folder / "labelsTr" / f"{CASE}.nii.gz"
    arr, _ = read_image(label)
    arr[0, 0, 0] = 7
    _rewrite(label, array=arr)
    return "values [7] not listed"


def non_integer_label(folder):
    label = folder / "labelsTr" / f"{CASE}.nii.gz"
    arr, _ = read_image(label)
    arr = arr.astype(np.float32)
    arr[0, 0, 0] = 0.5
    _rewrite(label, array=arr)
    return "non-integer values [0.5]"


def nan_in_image(folder):
    image = _files(folder)[0]
    arr, _ = read_image(image)
    arr[1, 2, 3] = np.nan
    _rewrite(image, array=arr)
    return "NaN or infinite"


def truncated_image(folder):
    image = _files(folder)[0]  # SimpleITK alone would read it, the missing voxels as zeros
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])
    return "truncated or damaged"


def inconsistent_ending(folder):
    shutil.copyfile(folder / "imagesTr" / f"{CASE}_0000.nii.gz", folder / "imagesTr" / "other_0000.nrrd")
    return "file ending differs"


def unreadable_image(folder):
    (folder / "imagesTr" / f"{CASE}_0000.nii.gz").write_bytes(b"not an image")
    return "cannot be read as an image"


def old_msd_dataset_json(folder):
    (folder / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "background"}}))
    return "missing key 'channel_names' (old MSD format? convert it with samunet_convert_msd)"


def wrong_num_training(folder):
    meta = json.loads((folder / "dataset.json").read_text())
    meta["numTraining"] = 9
    (folder / "dataset.json").write_text(json.dumps(meta))
    return "numTraining is 9"


BAD_INPUTS = [
    shape_mismatch, spacing_mismatch, origin_mismatch, direction_mismatch, missing_channel, missing_label,
    unknown_label_value, non_integer_label, nan_in_image, truncated_image, inconsistent_ending, unreadable_image,
    old_msd_dataset_json, wrong_num_training,
]


@pytest.mark.parametrize("corrupt", BAD_INPUTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
def test_bad_input_gives_one_line_and_writes_nothing(make_dataset, env, capsys, corrupt, verify):
    folder = make_dataset(num_cases=3, num_channels=2, anisotropic_axis=0)
    expected = corrupt(folder)
    with pytest.raises(SystemExit) as exit_info:
        plan_and_preprocess(["-d", "990", "-np", "1"] + (["--verify_dataset_integrity"] if verify else []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    err_lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(err_lines) == 1, err_lines
    message = err_lines[0]
    if "listed above" in message:  # the verify pass first lists each problem on a line of its own
        problems = [ln for ln in err.splitlines() if "case synthetic_" in ln]  # tqdm may leave \x1b codes
        assert len(problems) == 1
        message = problems[0]
    assert expected in message
    assert CASE in message or "dataset.json" in message or "other_0000" in message
    assert files_under(env.preprocessed) == []


def test_verify_lists_every_problem(make_dataset, env, capsys):
    folder = make_dataset(num_cases=3, num_channels=2)
    _rewrite(folder / "labelsTr" / "synthetic_000.nii.gz", origin=[1.0, 2.0, 3.0])
    image = folder / "imagesTr" / "synthetic_002_0001.nii.gz"
    arr, _ = read_image(image)
    arr[0, 0, 0] = np.inf
    _rewrite(image, array=arr)
    with pytest.raises(SystemExit):
        plan_and_preprocess(["-d", "990", "-np", "2", "--verify_dataset_integrity"])
    err = capsys.readouterr().err
    problems = [ln for ln in err.splitlines() if "case synthetic_" in ln]
    assert len(problems) == 2
    assert "synthetic_000" in problems[0] and "origin" in problems[0]
    assert "synthetic_002" in problems[1] and "NaN or infinite" in problems[1]
    assert "2 problem(s)" in err
    assert files_under(env.preprocessed) == []


def test_preprocess_without_plan_says_what_to_run(make_dataset, env, capsys):
    from samunet.preprocessing.preprocess_dataset import main as preprocess

    make_dataset()
    with pytest.raises(SystemExit):
        preprocess(["-d", "990"])
    assert "run samunet_plan_experiment" in capsys.readouterr().err
