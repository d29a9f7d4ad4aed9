import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samunet.dataset_conversion.convert_2d_images import main as convert_2d
from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.file_io import read_json
from samunet.imageio import read_image
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.preprocessing.storage import load_case
from samunet.raw_dataset import load_raw_dataset

from conftest import files_under
from training_helpers import one_line_error


def write_msd_task(folder, num_cases=3, channels=2):
    """A small MSD task: 4D multi-channel images, old-style dataset.json, a macOS '._' file."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "imagesTs").mkdir()
    rng = np.random.default_rng(0)
    training = []
    direction4 = np.eye(4)
    direction4[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    for i in range(num_cases):
        arr = rng.normal(size=(channels, 5, 6, 7)).astype(np.float32)
        img = sitk.JoinSeries([sitk.GetImageFromArray(a) for a in arr])  # 4D, size (x, y, z, c)
        img.SetSpacing((0.7, 0.8, 3.0, 1.0))
        img.SetOrigin((10.0, -5.0, 2.0, 0.0))
        img.SetDirection(direction4.ravel().tolist())
        sitk.WriteImage(img, str(folder / "imagesTr" / f"prostate_{i:02d}.nii.gz"))
        label = sitk.GetImageFromArray((rng.random((5, 6, 7)) > 0.7).astype(np.uint8))
        label.SetSpacing((0.7, 0.8, 3.0))
        sitk.WriteImage(label, str(folder / "labelsTr" / f"prostate_{i:02d}.nii.gz"))
        training.append({"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"})
    sitk.WriteImage(img, str(folder / "imagesTs" / "prostate_99.nii.gz"))
    (folder / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"resource fork")
    meta = {
        "name": "Prostate", "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "prostate"},
        "numTraining": num_cases, "training": training, "test": ["./imagesTs/prostate_99.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_msd_4d_images_split_into_channels(env, tmp_path):
    task = write_msd_task(tmp_path / "Task05_Prostate")
    convert_msd(["-i", str(task), "-np", "2"])
    out = env.raw / "Dataset005_Prostate"
    meta = read_json(out / "dataset.json")
    assert meta["channel_names"] == {"0": "T2", "1": "ADC"}
    assert meta["labels"] == {"background": 0, "prostate": 1}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    source = sitk.GetArrayFromImage(sitk.ReadImage(str(task / "imagesTr" / "prostate_01.nii.gz")))
    for c in range(2):
        arr, geom = read_image(out / "imagesTr" / f"prostate_01_{c:04d}.nii.gz")
        np.testing.assert_array_equal(arr, source[c])
        assert geom.spacing == pytest.approx((0.7, 0.8, 3.0))
        assert geom.origin == pytest.approx((10.0, -5.0, 2.0))
        assert geom.direction == pytest.approx((0, -1, 0, 1, 0, 0, 0, 0, 1))
    assert (out / "imagesTs" / "prostate_99_0001.nii.gz").is_file()
    assert len(load_raw_dataset(out).cases) == 3


def test_msd_conversion_refuses_taken_id_and_leaves_nothing_on_failure(env, tmp_path, capsys):
    task = write_msd_task(tmp_path / "Task05_Prostate")
    convert_msd(["-i", str(task), "-overwrite_id", "501"])
    before = files_under(env.raw)
    with pytest.raises(SystemExit):
        convert_msd(["-i", str(task), "-overwrite_id", "501"])
    assert "dataset id 501 is taken" in capsys.readouterr().err
    (task / "labelsTr" / "prostate_02.nii.gz").write_bytes(b"broken")
    (task / "imagesTr" / "prostate_02.nii.gz").write_bytes(b"broken")
    with pytest.raises(SystemExit):
        convert_msd(["-i", str(task), "-overwrite_id", "502"])
    assert "prostate_02.nii.gz: cannot be read" in capsys.readouterr().err
    assert files_under(env.raw) == before


def write_png_folder(folder, rgb, n=3):
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        shape = (30, 40, 3) if rgb else (30, 40)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / "images" / f"img{i}.png")
        mask = np.zeros((30, 40), np.uint8)
        mask[5:15, 10:30] = 255
        Image.fromarray(mask).save(folder / "masks" / f"img{i}.png")
    return folder


@pytest.mark.parametrize("rgb", [True, False])
def test_png_folder_becomes_pseudo_3d_dataset(env, tmp_path, rgb):
    source = write_png_folder(tmp_path / "pngs", rgb)
    convert_2d(["-i", str(source), "-d", "700", "-n", "Pngs", "--class-names", "lesion"])
    folder = env.raw / "Dataset700_Pngs"
    meta = read_json(folder / "dataset.json")
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert len(meta["channel_names"]) == (3 if rgb else 1)
    image = np.asarray(Image.open(source / "images" / "img1.png"))
    arr, geom = read_image(folder / "imagesTr" / "img1_0000.nii.gz")
    np.testing.assert_array_equal(arr[0], image[..., 0] if rgb else image)
    label, _ = read_image(folder / "labelsTr" / "img1.nii.gz")
    assert set(np.unique(label)) == {0, 1} and label.shape == (1, 30, 40)

    plan_and_preprocess(["-d", "700", "-np", "1", "--context-slices", "1"])
    plan = read_json(env.preprocessed / folder.name / "samunet_plans.json")
    assert plan["slicing_axis"] == 0 and plan["normalization"][0]["scheme"] == "rgb_to_0_1"
    assert plan["encoder_input"]["context_slices"] == 0  # 2D images get no neighbours, even when asked for
    data, seg, _ = load_case(env.preprocessed / folder.name / "samunet_2d", "img1")
    assert data.shape[:2] == ((3 if rgb else 1), 1)
    assert 0 <= data.min() and data.max() <= 1


def test_class_names_must_be_distinct_and_not_background(env, tmp_path, capsys):
    source = write_png_folder(tmp_path / "pngs", rgb=False)
    mask = np.zeros((30, 40), np.uint8)
    mask[2:4, 2:4] = 2
    Image.fromarray(mask).save(source / "masks" / "img0.png")  # label values 0, 1 and 2
    for names, message in ((["background", "lesion"], "a class named 'background': that name is label 0's"),
                           (["lesion", "lesion"], "class name(s) lesion given twice")):
        one_line_error(capsys, convert_2d, ["-i", str(source), "-d", "700", "-n", "Pngs", "--class-names", *names],
                       message)
    assert files_under(env.raw) == []


def test_png_folder_missing_mask_is_one_line(env, tmp_path, capsys):
    source = write_png_folder(tmp_path / "pngs", rgb=False)
    (source / "masks" / "img2.png").unlink()
    with pytest.raises(SystemExit):
        convert_2d(["-i", str(source), "-d", "700", "-n", "Pngs"])
    assert "no mask for img2.png" in capsys.readouterr().err
    assert files_under(env.raw) == []
