import hashlib
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samunet.errors import SamunetError
from samunet.evaluation.evaluate_cli import main as evaluate
from samunet.file_io import read_json
from samunet.image_folder import find_image_cases
from samunet.imageio import read_image
from samunet.inference.predict_cli import main as predict
from samunet.inference.predict_cli import main_from_modelfolder, predict_folder
from samunet.inference.predictor import SlicePredictor
from samunet.preprocessing.preprocess_case import preprocess_case
from samunet.raw_dataset import load_raw_dataset
from samunet.run_training import train

from training_helpers import prepare_dataset, train_args


@pytest.fixture
def trained(make_dataset, env, tmp_path):
    """A tiny lora_both model trained briefly on anisotropic phantoms with in-plane spacing jitter, and a
    folder of 'test' images (copies of the raw training images)."""
    prepare_dataset(make_dataset, env, num_cases=4, spacing_jitter=0.15)
    train(train_args("lora_both", "--epochs", "1", "--iters-per-epoch", "3", "--val-slices", "4"), show_progress=False)
    raw = env.raw / "Dataset990_Synthetic"
    images = tmp_path / "imagesTs"
    shutil.copytree(raw / "imagesTr", images)
    return raw, images


def test_prediction_keeps_the_input_geometry_exactly(trained, tmp_path, capsys):
    raw, images = trained
    out = tmp_path / "preds"
    predict(["-i", str(images), "-o", str(out), "-npp", "2", "-nps", "2", "--amp", "off"])
    assert "model: Dataset990_Synthetic/lora_both__tiny, folds 0 (the only trained configuration)" in capsys.readouterr().out
    for case in load_raw_dataset(raw).cases.values():
        pred, pred_geom = read_image(out / f"{case.case_id}.nii.gz")
        image, geom = read_image(case.images[0])
        assert pred.shape == image.shape
        assert pred_geom.spacing == pytest.approx(geom.spacing, rel=1e-7)
        assert pred_geom.origin == pytest.approx(geom.origin, rel=1e-7)
        # NIfTI stores the direction as a float32 quaternion: equal up to that precision
        assert pred_geom.direction == pytest.approx(geom.direction, abs=1e-6)
        assert pred_geom.direction != pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1), abs=1e-3)
        assert set(np.unique(pred)) <= {0, 1, 2}


def _oracle(predictor, raw):
    """Replace the network by the ground truth: look each preprocessed slice up and return its one-hot
    label at input size, resized as training targets are (nearest); everything around it (resizes,
    un-cropping, un-transposing, writing) is real."""
    lookup = {}
    for case in load_raw_dataset(raw).cases.values():
        images = [read_image(p)[0] for p in case.images]
        label, geom = read_image(case.label)
        data, seg, _ = preprocess_case(images, label, geom, predictor.plan)
        for s in range(data.shape[1]):
            lookup[hashlib.sha1(np.ascontiguousarray(data[:, s]).tobytes()).hexdigest()] = seg[s]
    size = predictor.mapper.size

    def chunk_probabilities(model, data, chunk, axes, kept):
        onehots = []
        for s in chunk:
            seg = torch.from_numpy(lookup[hashlib.sha1(np.ascontiguousarray(data[:, s]).tobytes()).hexdigest()]).long()
            onehot = F.one_hot(seg, predictor.num_outputs).permute(2, 0, 1).float()[None]
            onehots.append(F.interpolate(onehot, size=(size, size), mode="nearest-exact")[0])
        return torch.stack(onehots)

    predictor._chunk_probabilities = chunk_probabilities


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("jitter", [0.0, 0.15])
def test_oracle_model_reproduces_the_label_map(make_dataset, env, tmp_path, jitter):
    # input size 128 > slice size: the input-size round trip is exactly invertible
    prepare_dataset(make_dataset, env, num_cases=4, spacing_jitter=jitter, shape=(6, 96, 88), input_size=128)
    train(train_args("linear_head", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "2"), show_progress=False)
    raw = env.raw / "Dataset990_Synthetic"
    predictor = SlicePredictor.from_model_folder(env.results / raw.name / "linear_head__tiny", ["0"], use_tta=False)
    _oracle(predictor, raw)
    out = tmp_path / "oracle"
    written, failures = predict_folder(predictor, raw / "imagesTr", out)
    assert len(written) == 4 and not failures
    for case in load_raw_dataset(raw).cases.values():
        label, _ = read_image(case.label)
        pred, _ = read_image(out / f"{case.case_id}.nii.gz")
        for c in (1, 2):
            if jitter == 0:
                assert dice(pred == c, label == c) == 1.0
            else:
                assert dice(pred == c, label == c) > 0.98
    evaluate([str(raw / "labelsTr"), str(out), "-l", "1", "2", "-np", "1"])
    summary = read_json(out / "summary.json")
    assert summary["foreground_mean"]["Dice"] > 0.98 and len(summary["metric_per_case"]) == 4


def test_continue_prediction_and_failing_cases(trained, tmp_path, capsys):
    raw, images = trained
    out = tmp_path / "preds"
    predict(["-i", str(images), "-o", str(out), "--disable-tta", "-npp", "1", "-nps", "1"])
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    (out / "synthetic_001.nii.gz").unlink()
    predict(["-i", str(images), "-o", str(out), "--disable-tta", "--continue-prediction"])
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert after.keys() == mtimes.keys()
    assert all(after[n] == mtimes[n] for n in mtimes if n != "synthetic_001.nii.gz")

    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    (broken / "synthetic_002_0000.nii.gz").write_bytes(b"not an image")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        predict(["-i", str(broken), "-o", str(tmp_path / "p2"), "--disable-tta"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "synthetic_002_0000.nii.gz: cannot be read as an image" in err and "1 case(s) failed" in err
    assert sorted(p.name for p in (tmp_path / "p2").glob("*.nii.gz")) == [
        "synthetic_000.nii.gz", "synthetic_001.nii.gz", "synthetic_003.nii.gz"]


def test_prediction_refuses_bad_requests(trained, env, tmp_path, capsys):
    raw, images = trained
    with pytest.raises(SystemExit):
        predict(["-i", str(images), "-o", str(images)])
    assert "must differ from the input folder" in capsys.readouterr().err
    (images / "synthetic_000_0000.nii.gz").rename(images / "synthetic_000_0001.nii.gz")  # another modality set
    with pytest.raises(SystemExit):
        predict(["-i", str(images), "-o", str(tmp_path / "x")])
    assert "holds channel file(s) _0001, but the plan has 1 channel(s) per case" in capsys.readouterr().err
    (images / "synthetic_000_0001.nii.gz").rename(images / "synthetic_000_0000.nii.gz")
    (images / "synthetic_001_0001.nii.gz").symlink_to(images / "synthetic_001_0000.nii.gz")
    with pytest.raises(SamunetError, match="missing channel file.s. synthetic_000_0001.nii.gz, synthetic_002_0001"):
        find_image_cases(images, 2, ".nii.gz")  # with 2 channels per case only case 001 has both
    (images / "synthetic_001_0001.nii.gz").unlink()
    train(train_args("cnn_head", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "2"), show_progress=False)
    with pytest.raises(SystemExit):
        predict(["-i", str(images), "-o", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert "2 trained configurations" in err and "cnn_head__tiny" in err and "lora_both__tiny" in err
    main_from_modelfolder(["-i", str(images), "-o", str(tmp_path / "z"), "-m",
                           str(env.results / raw.name / "cnn_head__tiny"), "--save-probabilities", "--disable-tta"])
    probs = np.load(tmp_path / "z" / "synthetic_001.npz")["probabilities"]
    pred, _ = read_image(tmp_path / "z" / "synthetic_001.nii.gz")
    assert probs.shape == (3, *pred.shape)
    np.testing.assert_array_equal(probs.astype(np.float32).argmax(0), pred)
