"""Real data from ../shared/data (skipped when absent): hippocampus MRI, a CT, anisotropic NRRD MR."""
import shutil

import numpy as np
import pytest

from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.file_io import read_json, write_json
from samunet.imageio import read_image, write_image
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.preprocessing.preprocess_dataset import preprocess_dataset
from samunet.preprocessing.restore_geometry import original_geometry, restore_segmentation
from samunet.preprocessing.storage import load_case

from conftest import SHARED_DATA, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.real_data]


def test_hippocampus_convert_plan_preprocess(env):
    convert_msd(["-i", str(SHARED_DATA / "Task04_Hippocampus"), "-overwrite_id", "501", "-np", "2"])
    raw = env.raw / "Dataset501_Hippocampus"
    meta = read_json(raw / "dataset.json")
    assert meta["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert meta["channel_names"] == {"0": "MRI"} and meta["numTraining"] == 200

    plan_and_preprocess(["-d", "501", "-np", "2"])
    out = env.preprocessed / raw.name
    plan = read_json(out / "samunet_plans.json")
    assert plan["normalization"][0]["scheme"] == "zscore"
    assert plan["target_spacing_3d"] == [1.0, 1.0, 1.0]
    assert len(list((out / "samunet_2d").glob("*.json"))) == 200
    splits = read_json(out / "splits_final.json")
    assert len(splits) == 5 and sorted(sum((f["val"] for f in splits), [])) == sorted(read_json(out / "dataset_fingerprint.json")["case_ids"])
    # 1 mm isotropic: nothing is resampled, so the labels come back exactly (also the float32 ones)
    for case_id in ("hippocampus_003", "hippocampus_001", "hippocampus_394"):
        _, seg, props = load_case(out / "samunet_2d", case_id)
        label, geometry = read_image(raw / "labelsTr" / f"{case_id}.nii.gz")
        np.testing.assert_array_equal(restore_segmentation(seg, props), label)
        assert original_geometry(props) == geometry


def test_ct_takes_the_ct_normalisation(env):
    folder = env.raw / "Dataset600_CT"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    shutil.copyfile(SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz", folder / "imagesTr" / "ct_0000.nii.gz")
    seg, geometry = read_image(SHARED_DATA / "ct_example" / "example_seg.nii.gz")
    write_image((seg > 0).astype(np.uint8), geometry, folder / "labelsTr" / "ct.nii.gz")
    write_json({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": 1,
                "file_ending": ".nii.gz"}, folder / "dataset.json")
    plan_and_preprocess(["-d", "600", "-np", "1"])
    plan = read_json(env.preprocessed / folder.name / "samunet_plans.json")
    norm = plan["normalization"][0]
    assert norm["scheme"] == "ct"
    image, _ = read_image(folder / "imagesTr" / "ct_0000.nii.gz")
    organ = image[seg > 0]
    lo, hi = norm["clip"]
    assert organ.min() <= lo < hi <= organ.max()
    data, _, _ = load_case(env.preprocessed / folder.name / "samunet_2d", "ct")
    assert data.min() == pytest.approx((lo - norm["mean"]) / norm["std"], abs=1e-4)
    assert data.max() == pytest.approx((hi - norm["mean"]) / norm["std"], abs=1e-4)


def test_anisotropic_nrrd_is_resampled_in_plane_only(env):
    folder = env.raw / "Dataset601_BrainNrrd"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for name in ("brain1", "brain2"):
        shutil.copyfile(SHARED_DATA / "nrrd_examples" / f"{name}_image.nrrd", folder / "imagesTr" / f"{name}_0000.nrrd")
        shutil.copyfile(SHARED_DATA / "nrrd_examples" / f"{name}_label.nrrd", folder / "labelsTr" / f"{name}.nrrd")
    write_json({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".nrrd"}, folder / "dataset.json")
    plan_and_preprocess(["-d", "601", "-np", "2", "--no_pp"])
    plan_path = env.preprocessed / folder.name / "samunet_plans.json"
    plan = read_json(plan_path)
    assert plan["slicing_axis"] == 0  # the 6.5 mm axis
    assert plan["in_plane_spacing_transposed"] == pytest.approx([0.78125, 0.78125])
    # ask for 1 mm in-plane, as a user editing the plan would: slices keep their count and thickness
    plan["in_plane_spacing_transposed"] = [1.0, 1.0]
    write_json(plan, plan_path)
    preprocess_dataset(601, num_processes=2)
    for name in ("brain1", "brain2"):
        _, seg, props = load_case(env.preprocessed / folder.name / "samunet_2d", name)
        label, geometry = read_image(folder / "labelsTr" / f"{name}.nrrd")
        crop = props["crop_box_transposed"]
        assert seg.shape[0] == crop[0][1] - crop[0][0]
        assert props["spacing_after_resampling"] == pytest.approx([6.5, 1.0, 1.0])
        assert list(seg.shape[1:]) == [round((hi - lo) * 0.78125) for lo, hi in crop[1:]]
        restored = restore_segmentation(seg, props)
        assert restored.shape == label.shape and original_geometry(props) == geometry
        overlap = 2 * np.logical_and(restored > 0, label > 0).sum() / ((restored > 0).sum() + (label > 0).sum())
        assert overlap > 0.9
