"""Converters for the SAM anchors' data formats (SAM-Med2D folders, finetune-SAM lists, MedSAM .npz), on
fixtures written here in each project's exact layout; bad inputs give one line naming the file."""
import json

import numpy as np
import pytest
from PIL import Image

from samunet.dataset_conversion.convert_csv import main as convert_csv
from samunet.dataset_conversion.convert_npz import main as convert_npz
from samunet.dataset_conversion.convert_sam_med2d import main as convert_sam_med2d
from samunet.file_io import read_json
from samunet.imageio import read_image
from samunet.plan_and_preprocess import main as plan_and_preprocess

from conftest import files_under
from training_helpers import one_line_error


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_sam_med2d(folder):
    """SAM-Med2D's data_demo layout: RGB-saved grey images, one 0/255 mask per object named
    {image}_{class}_{instance:03d}.png, paths in the JSON lists relative to the folder's parent."""
    rng = np.random.default_rng(0)
    grey = [rng.integers(0, 255, (20, 24), dtype=np.uint8) for _ in range(3)]
    for name, image in zip(("amos_0004_75", "amos_0006_90", "s0114_111"), grey):
        _png(folder / "images" / f"{name}.png", np.stack([image] * 3, axis=-1))

    def mask(box):
        m = np.zeros((20, 24), np.uint8)
        m[box[0]:box[1], box[2]:box[3]] = 255
        return m

    masks = {  # amos_0006_90: the aorta lies inside the liver; s0114_111: two instances of rib_left_9
        "amos_0004_75": {"liver_000": (2, 10, 2, 10)},
        "amos_0006_90": {"liver_000": (2, 12, 2, 12), "aorta_000": (4, 6, 4, 6), "spleen_000": (14, 18, 14, 20)},
        "s0114_111": {"rib_left_9_000": (1, 3, 1, 3), "rib_left_9_001": (10, 12, 10, 12), "liver_000": (15, 19, 2, 8)},
    }
    for image, objects in masks.items():
        for suffix, box in objects.items():
            _png(folder / "masks" / f"{image}_{suffix}.png", mask(box))
    rel = folder.name
    train = {f"{rel}/images/{i}.png": [f"{rel}/masks/{i}_{s}.png" for s in masks[i]] for i in ("amos_0004_75", "amos_0006_90")}
    test = {f"{rel}/masks/s0114_111_{s}.png": f"{rel}/images/s0114_111.png" for s in masks["s0114_111"]}
    (folder / "image2label_train.json").write_text(json.dumps(train, indent=4))
    (folder / "label2image_test.json").write_text(json.dumps(test, indent=4))
    return folder, grey


def test_sam_med2d_folder_becomes_a_dataset_with_one_label_map_per_image(env, tmp_path, capsys):
    source, grey = write_sam_med2d(tmp_path / "data_demo")
    convert_sam_med2d(["-i", str(source), "-d", "710"])
    folder = env.raw / "Dataset710_data_demo"
    meta = read_json(folder / "dataset.json")
    # class ids: the class names of the whole dataset in sorted order, the same in every case
    assert meta["labels"] == {"background": 0, "aorta": 1, "liver": 2, "rib_left_9": 3, "spleen": 4}
    assert meta["channel_names"] == {"0": "rgb_to_0_1"} and meta["numTraining"] == 2
    image, _ = read_image(folder / "imagesTr" / "amos_0006_90_0000.nii.gz")
    np.testing.assert_array_equal(image[0], grey[1])
    labels, geometry = read_image(folder / "labelsTr" / "amos_0006_90.nii.gz")
    assert labels.shape == (1, 20, 24) and geometry.spacing[2] == 999.0
    assert (labels[0, 4:6, 4:6] == 1).all()  # the smaller aorta keeps the overlap
    assert (labels[0, 2:12, 2:12] == 2).sum() == 100 - 4 and (labels[0, 14:18, 14:20] == 4).all()
    test_labels, _ = read_image(folder / "labelsTs" / "s0114_111.nii.gz")
    assert (test_labels[0, 1:3, 1:3] == 3).all() and (test_labels[0, 10:12, 10:12] == 3).all()  # instances united
    assert (folder / "imagesTs" / "s0114_111_0000.nii.gz").is_file()
    out = capsys.readouterr().out
    assert "1 image(s) had overlapping masks of different classes (4 pixels)" in out
    plan_and_preprocess(["-d", "710", "-np", "1"])  # a dataset the pipeline takes as it is
    assert (env.preprocessed / folder.name / "samunet_2d" / "amos_0006_90.json").is_file()


def test_grey_images_before_the_first_colour_one_get_three_channels(env, tmp_path):
    """One reading pass: a grey case written while the set looked grey is repeated into channels 1 and 2 once a
    colour image appears; grey images saved with alpha or as RGB stay grey."""
    source, grey = write_sam_med2d(tmp_path / "data_demo")
    _png(source / "images" / "amos_0004_75.png", grey[0])  # a plain 2D grey PNG, first in order
    _png(source / "images" / "s0114_111.png", np.stack([grey[2], np.full_like(grey[2], 255)], axis=-1))  # grey + alpha
    convert_sam_med2d(["-i", str(source), "-d", "711"])
    folder = env.raw / "Dataset711_data_demo"
    assert read_json(folder / "dataset.json")["channel_names"] == {"0": "rgb_to_0_1"}

    colour = np.stack([grey[1], 255 - grey[1], grey[1] // 2], axis=-1).astype(np.uint8)
    _png(source / "images" / "amos_0006_90.png", colour)
    convert_sam_med2d(["-i", str(source), "-d", "712"])
    folder = env.raw / "Dataset712_data_demo"
    assert len(read_json(folder / "dataset.json")["channel_names"]) == 3
    for case, expected in (("amos_0004_75", [grey[0]] * 3), ("amos_0006_90", [colour[..., c] for c in range(3)])):
        for c in range(3):
            image, _ = read_image(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz")
            np.testing.assert_array_equal(image[0], expected[c])
    for c in range(3):  # the test case, written after the colour one
        image, _ = read_image(folder / "imagesTs" / f"s0114_111_{c:04d}.nii.gz")
        np.testing.assert_array_equal(image[0], grey[2])


def test_sam_med2d_bad_inputs_are_one_line_errors(env, tmp_path, capsys):
    source, _ = write_sam_med2d(tmp_path / "data_demo")
    (source / "masks" / "amos_0004_75_liver_000.png").unlink()
    one_line_error(capsys, convert_sam_med2d, ["-i", str(source), "-d", "710"],
                   "image2label_train.json: lists data_demo/masks/amos_0004_75_liver_000.png, which is not there")
    _png(source / "masks" / "amos_0004_75_liver_000.png", np.zeros((10, 10), np.uint8))
    one_line_error(capsys, convert_sam_med2d, ["-i", str(source), "-d", "710"],
                   "amos_0004_75_liver_000.png: size (10, 10) differs from its image's (24, 20)")
    (source / "masks" / "amos_0004_75_liver_000.png").unlink()
    _png(source / "masks" / "amos_0004_75_background_000.png", np.zeros((20, 24), np.uint8))
    listed = json.loads((source / "image2label_train.json").read_text())
    listed["data_demo/images/amos_0004_75.png"] = ["data_demo/masks/amos_0004_75_background_000.png"]
    (source / "image2label_train.json").write_text(json.dumps(listed))
    one_line_error(capsys, convert_sam_med2d, ["-i", str(source), "-d", "710"],
                   "data_demo (mask names): a class named 'background': that name is label 0's")
    assert files_under(env.raw) == []  # nothing half-written


def test_csv_lists_with_either_separator_and_slices_grouped_into_volumes(env, tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    volume = rng.integers(0, 255, (3, 16, 18), dtype=np.uint8)
    rows = []
    for z in range(3):  # one volume saved as slices, listed out of order
        _png(data / "img" / f"pat1_slice_{z}.png", volume[z])
        _png(data / "mask" / f"pat1_slice_{z}.png", np.where(volume[z] > 128, 255, 0).astype(np.uint8))
        rows.append((f"img/pat1_slice_{z}.png", f"mask/pat1_slice_{z}.png"))
    _png(data / "img" / "other.png", volume[0])
    _png(data / "mask" / "other.png", (volume[0] > 200).astype(np.uint8) * 2)
    rows = [rows[2], rows[0], ("img/other.png", "mask/other.png"), rows[1]]
    for dataset_id, separator in ((720, ","), (721, "\t")):
        listing = tmp_path / f"train_{dataset_id}.csv"
        listing.write_text("\n".join(separator.join(r) for r in [("image_path", "mask_path")] + rows) + "\n")
        convert_csv(["-i", str(listing), "-d", str(dataset_id), "-n", "Listed", "--root", str(data)])
        folder = env.raw / f"Dataset{dataset_id}_Listed"
        image, geometry = read_image(folder / "imagesTr" / "pat1_0000.nii.gz")
        np.testing.assert_array_equal(image, volume)  # stacked in slice order
        assert geometry.spacing == (1.0, 1.0, 1.0)
        labels, _ = read_image(folder / "labelsTr" / "pat1.nii.gz")
        np.testing.assert_array_equal(labels, (volume > 128).astype(np.uint8))
        single, geometry = read_image(folder / "labelsTr" / "other.nii.gz")
        assert single.shape == (1, 16, 18) and geometry.spacing[2] == 999.0 and single.max() == 2
        assert read_json(folder / "dataset.json")["numTraining"] == 2
    assert "2 cases: 1 volume(s) grouped from slices, 1 single image(s)" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text("img/other.png;mask/other.png\n")
    one_line_error(capsys, convert_csv, ["-i", str(bad), "-d", "722", "-n", "Bad", "--root", str(data)],
                   "bad.csv: line 1 has neither a tab nor a comma")
    gap = tmp_path / "gap.csv"
    gap.write_text(f"{','.join(rows[0])}\n{','.join(rows[1])}\n")  # slices 2 and 0: 1 is missing
    one_line_error(capsys, convert_csv, ["-i", str(gap), "-d", "722", "-n", "Bad", "--root", str(data)],
                   "case pat1", "slice(s) 1 missing")
    _png(data / "mask" / "small.png", np.zeros((4, 4), np.uint8))
    size = tmp_path / "size.csv"
    size.write_text("img/other.png,mask/small.png\n")
    one_line_error(capsys, convert_csv, ["-i", str(size), "-d", "722", "-n", "Bad", "--root", str(data)],
                   "small.png: size (4, 4) differs from its image's (18, 16)")
    assert not list(env.raw.glob("Dataset722_*"))


def test_medsam_npz_files_3d_2d_and_test_cases(env, tmp_path, capsys):
    rng = np.random.default_rng(2)
    source = tmp_path / "npz"
    source.mkdir()
    imgs3d = rng.integers(0, 255, (6, 20, 22), dtype=np.uint8)
    gts3d = np.zeros((6, 20, 22), np.uint8)
    gts3d[1:5, 4:12, 5:15] = 1
    gts3d[2:4, 14:18, 5:9] = 3
    np.savez_compressed(source / "CT_Abd_case1.npz", imgs=imgs3d, gts=gts3d, spacing=np.array([0.8, 0.7, 2.5]))
    imgs2d = rng.integers(0, 255, (20, 22), dtype=np.uint8)
    np.savez_compressed(source / "CT_Abd_slice2.npz", imgs=imgs2d, gts=(imgs2d > 200).astype(np.uint8))
    np.savez_compressed(source / "CT_Abd_test3.npz", imgs=imgs3d[:3])
    convert_npz(["-i", str(source), "-d", "730", "-n", "MedSAMNpz", "--class-names", "liver", "kidney", "tumour"])
    folder = env.raw / "Dataset730_MedSAMNpz"
    meta = read_json(folder / "dataset.json")
    assert meta["numTraining"] == 2 and meta["channel_names"] == {"0": "rgb_to_0_1"}
    assert meta["labels"] == {"background": 0, "liver": 1, "kidney": 2, "tumour": 3}
    image, geometry = read_image(folder / "imagesTr" / "CT_Abd_case1_0000.nii.gz")
    np.testing.assert_array_equal(image, imgs3d)
    assert geometry.spacing == pytest.approx((0.8, 0.7, 2.5))  # SimpleITK's (x, y, z), as MedSAM saves it
    np.testing.assert_array_equal(read_image(folder / "labelsTr" / "CT_Abd_case1.nii.gz")[0], gts3d)
    flat, geometry = read_image(folder / "imagesTr" / "CT_Abd_slice2_0000.nii.gz")
    assert flat.shape == (1, 20, 22) and geometry.spacing[2] == 999.0
    assert (folder / "imagesTs" / "CT_Abd_test3_0000.nii.gz").is_file()
    assert "2 training cases, 1 test cases" in capsys.readouterr().out

    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez_compressed(bad / "a.npz", imgs=imgs3d, gts=gts3d[:, :10])
    one_line_error(capsys, convert_npz, ["-i", str(bad), "-d", "731", "-n", "Bad"],
                   "a.npz: `gts` has shape (6, 10, 22), `imgs` (6, 20, 22)")
    (bad / "a.npz").write_bytes(b"not a zip")
    one_line_error(capsys, convert_npz, ["-i", str(bad), "-d", "731", "-n", "Bad"], "a.npz: cannot be read as an .npz")
    assert not list(env.raw.glob("Dataset731_*"))
