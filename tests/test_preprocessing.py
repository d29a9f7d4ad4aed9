import json
import os

import numpy as np
import pytest

from samunet.file_io import read_json, write_json
from samunet.imageio import read_image
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.preprocessing.preprocess_dataset import preprocess_dataset
from samunet.preprocessing.restore_geometry import original_geometry, restore_probabilities, restore_segmentation
from samunet.preprocessing.storage import case_files, load_case
from samunet.raw_dataset import load_raw_dataset


def run(dataset_id, *extra):
    plan_and_preprocess(["-d", str(dataset_id), "-np", "1", *extra])


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def preprocessed(env, raw_folder):
    folder = env.preprocessed / raw_folder.name
    return folder, read_json(folder / "samunet_plans.json")


@pytest.mark.parametrize("anisotropic_axis", [0, 2, None])
def test_round_trip_is_exact_without_resampling(make_dataset, env, anisotropic_axis):
    raw_folder = make_dataset(anisotropic_axis=anisotropic_axis, spacing_jitter=0.0)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    expected_forward = [anisotropic_axis] + [a for a in range(3) if a != anisotropic_axis] if anisotropic_axis is not None else [0, 1, 2]
    assert plan["transpose_forward"] == expected_forward
    for case in load_raw_dataset(raw_folder).cases.values():
        data, seg, props = load_case(folder / plan["data_identifier"], case.case_id)
        label, geometry = read_image(case.label)
        assert data.shape[1:] == seg.shape == tuple(props["shape_after_crop"])  # nothing resampled
        lo, hi = props["crop_box_transposed"][0]
        assert seg.shape[0] == hi - lo <= label.shape[anisotropic_axis or 0]
        restored = restore_segmentation(seg, props)
        np.testing.assert_array_equal(restored, label)
        assert original_geometry(props) == geometry
        assert props["crop_box_transposed"] != [[0, s] for s in props["shape_after_transpose"]]  # cropping happened


def test_round_trip_with_in_plane_resampling(make_dataset, env):
    raw_folder = make_dataset(num_cases=5, spacing_jitter=0.2, shape=(8, 48, 40))
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    resampled = 0
    for case in load_raw_dataset(raw_folder).cases.values():
        data, seg, props = load_case(folder / plan["data_identifier"], case.case_id)
        label, geometry = read_image(case.label)
        # only in-plane axes change; the slicing axis keeps its voxels and spacing
        assert seg.shape[0] == props["shape_after_crop"][0]
        assert props["spacing_after_resampling"][0] == props["spacing_after_transpose"][0]
        resampled += props["shape_after_resampling"] != props["shape_after_crop"]
        restored = restore_segmentation(seg, props)
        assert restored.shape == label.shape
        for c in (1, 2):
            assert dice(restored == c, label == c) > 0.9
        assert original_geometry(props) == geometry
    assert resampled >= 3


def test_restore_probabilities_matches_labels_and_marks_outside_as_background(make_dataset, env):
    raw_folder = make_dataset(num_cases=2)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    case = next(iter(load_raw_dataset(raw_folder).cases.values()))
    _, seg, props = load_case(folder / plan["data_identifier"], case.case_id)
    one_hot = np.stack([(seg == c).astype(np.float32) for c in range(3)])
    probs = restore_probabilities(one_hot, props)
    label, _ = read_image(case.label)
    assert probs.shape == (3, *label.shape)
    np.testing.assert_array_equal(probs.argmax(0), label)
    box = props["crop_box_transposed"]
    outside = np.ones(props["shape_after_transpose"], bool)
    outside[tuple(slice(lo, hi) for lo, hi in box)] = False
    assert outside.any() and np.all(probs[0][outside.transpose(props["transpose_backward"])] == 1.0)


def test_properties_record_class_slices_and_normalisation(make_dataset, env):
    raw_folder = make_dataset(num_cases=2)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    for case_id in load_raw_dataset(raw_folder).cases:
        data, seg, props = load_case(folder / plan["data_identifier"], case_id)
        for c in ("1", "2"):
            assert props["class_slices"][c] == [i for i in range(seg.shape[0]) if (seg[i] == int(c)).any()]
        assert plan["normalization"][0]["scheme"] == "zscore"
        if plan["normalization"][0]["use_nonzero_mask"]:
            inside = data[0] != 0
            assert abs(data[0][inside].mean()) < 0.05 and abs(data[0][inside].std() - 1) < 0.05


def test_multichannel_ct(make_dataset, env):
    raw_folder = make_dataset(kind="ct", num_channels=3)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    assert [n["scheme"] for n in plan["normalization"]] == ["ct", "zscore", "zscore"]
    fingerprint = read_json(folder / "dataset_fingerprint.json")
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert plan["normalization"][0]["clip"] == [stats["percentile_00_5"], stats["percentile_99_5"]]
    data, _, _ = load_case(folder / plan["data_identifier"], "synthetic_000")
    assert data.shape[0] == 3
    lo, hi = plan["intensity_mapping"]["window_per_channel"][0]
    assert data[0].min() >= lo - 1e-4 and data[0].max() <= hi + 1e-4  # CT is clipped to the window


def test_rerun_is_idempotent_and_redoes_changed_cases(make_dataset, env):
    raw_folder = make_dataset(num_cases=3)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    data_dir = folder / plan["data_identifier"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    run(990)
    assert {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()} == mtimes

    changed = raw_folder / "imagesTr" / "synthetic_001_0000.nii.gz"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    preprocess_dataset(990)
    after = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    assert after["synthetic_001.json"] != mtimes["synthetic_001.json"]
    assert after["synthetic_000.json"] == mtimes["synthetic_000.json"]

    # a case whose reference copy is missing (data preprocessed before references were copied) is redone
    (folder / "gt_segmentations" / "synthetic_002.nii.gz").unlink()
    preprocess_dataset(990)
    assert (folder / "gt_segmentations" / "synthetic_002.nii.gz").is_file()
    mtimes = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}

    # a plan change that affects preprocessing redoes every case
    plan["in_plane_spacing_transposed"] = [s * 2 for s in plan["in_plane_spacing_transposed"]]
    write_json(plan, folder / "samunet_plans.json")
    preprocess_dataset(990)
    for case_id in ("synthetic_000", "synthetic_002"):
        _, seg, props = load_case(data_dir, case_id)
        assert seg.shape[1] == round(props["shape_after_crop"][1] / 2)


def test_clean_removes_stale_output_and_incomplete_cases_are_redone(make_dataset, env):
    raw_folder = make_dataset(num_cases=2)
    run(990)
    folder, plan = preprocessed(env, raw_folder)
    data_dir = folder / plan["data_identifier"]
    (data_dir / "stale_case.json").write_text("{}")
    case_files(data_dir, "synthetic_000")[2].unlink()  # as if killed before the properties were written
    preprocess_dataset(990)
    assert case_files(data_dir, "synthetic_000")[2].is_file()
    assert (data_dir / "stale_case.json").exists()
    run(990, "--clean")
    assert not (data_dir / "stale_case.json").exists()
    assert sorted(p.name for p in data_dir.glob("*.json")) == ["synthetic_000.json", "synthetic_001.json"]


def test_splits_file_is_kept_when_present(make_dataset, env):
    raw_folder = make_dataset(num_cases=6)
    run(990, "--no_pp")
    splits_path = env.preprocessed / raw_folder.name / "splits_final.json"
    custom = [{"train": ["synthetic_000"], "val": ["synthetic_001"]}]
    splits_path.write_text(json.dumps(custom))
    run(990, "--no_pp")
    assert json.loads(splits_path.read_text()) == custom
    assert not (env.preprocessed / raw_folder.name / "samunet_2d").exists()
