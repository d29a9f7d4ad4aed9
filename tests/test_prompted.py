"""Prompted training (--prompts) and prompted prediction (--prompts FILE|FOLDER|auto) on `tiny`."""
import shutil

import numpy as np
import pytest

from samunet.errors import SamunetError
from samunet.evaluation.evaluate_cli import main as evaluate
from samunet.file_io import read_json, write_json
from samunet.imageio import read_image, write_image
from samunet.inference.predict_cli import main as predict
from samunet.inference.predict_cli import main_from_modelfolder
from samunet.inference.predictor import SlicePredictor
from samunet.inference.prompt_sources import MODEL_MASK_GROWTH, AutoPrompts, prompt_source
from samunet.inference.prompted_predictor import PromptedPredictor
from samunet.prompts.make_prompts_cli import main as make_prompts
from samunet.run_training import train

from training_helpers import one_line_error, prepare_dataset, train_args

MODEL = "Dataset990_Synthetic/decoder__tiny__prompts-box"


@pytest.fixture
def prompted(make_dataset, env, tmp_path):
    """A tiny `decoder` trained with box prompts, and a folder of 'test' images (the raw training images)."""
    prepare_dataset(make_dataset, env, num_cases=4, spacing_jitter=0.15)
    train(train_args("decoder", "--prompts", "box", "--epochs", "1", "--iters-per-epoch", "3", "--val-slices", "4"),
          show_progress=False)
    raw = env.raw / "Dataset990_Synthetic"
    images = tmp_path / "imagesTs"
    shutil.copytree(raw / "imagesTr", images)
    return raw, images


def test_prompted_training_is_its_own_configuration_and_validates_with_reference_prompts(prompted, env):
    fold = env.results / MODEL / "fold_0"
    summary = read_json(fold / "validation" / "summary.json")
    assert summary["prompt_provenance"] == "ground_truth" and summary["mirroring_axes"] == []
    meta = read_json(fold / "checkpoint_final.json")
    assert meta["prompts"]["kind"] == "box"
    assert not (env.results / "Dataset990_Synthetic" / "decoder__tiny").exists()
    assert "prompted (box)" in (fold / "training_log.txt").read_text()


def test_prompted_training_resumes(make_dataset, env):
    prepare_dataset(make_dataset, env, num_cases=4)
    args = ["--prompts", "box+point", "--iters-per-epoch", "2", "--val-slices", "4", "--no-cache"]
    train(train_args("decoder", *args, "--epochs", "1"), show_progress=False)
    fold = env.results / "Dataset990_Synthetic" / "decoder__tiny__prompts-box-point" / "fold_0"
    final = fold / "checkpoint_final.pth"
    shutil.move(final, fold / "checkpoint_latest.pth")
    trainer = train(train_args("decoder", *args, "--epochs", "2", "--c"), show_progress=False)
    assert trainer.start_epoch == 2 and len(trainer.log["train_loss"]) == 2
    assert "continuing from" in (fold / "training_log.txt").read_text()


def test_strategies_whose_head_takes_no_prompts_are_refused(make_dataset, env):
    prepare_dataset(make_dataset, env, num_cases=4)
    with pytest.raises(SamunetError, match="autosam head, which takes no prompts"):
        train(train_args("autosam", "--prompts", "box"), show_progress=False)
    with pytest.raises(SamunetError, match="box jitter"):
        train(train_args("decoder", "--prompts", "box", "--box-jitter", "many"), show_progress=False)


def _case_ids(images):
    return sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))


def test_prediction_from_a_prompts_file_a_mask_folder_and_auto(prompted, env, tmp_path, capsys):
    raw, images = prompted
    labels = raw / "labelsTr"
    prompts_file = tmp_path / "prompts.json"
    make_prompts([str(labels), "-o", str(prompts_file)])
    assert read_json(prompts_file)["provenance"] == "ground_truth"

    runs = {"file": [str(prompts_file)], "folder": [str(labels), "--prompt-provenance", "ground_truth"], "auto": ["auto"]}
    expected = {"file": "ground_truth", "folder": "ground_truth", "auto": "model"}
    for name, spec in runs.items():
        out = tmp_path / name
        predict(["-i", str(images), "-o", str(out), "--amp", "off", "-npp", "1", "-nps", "1", "--prompts", *spec])
        printed = capsys.readouterr().out
        assert f"model: {MODEL}, folds 0 (the only trained prompted configuration)" in printed
        info = read_json(out / "prediction_info.json")
        assert info["prompts"]["provenance"] == expected[name]
        # boxes from masks grow by half the training jitter, from a model's own masks by more
        assert info["prompts"].get("box_growth") == {"file": None, "folder": 0.5, "auto": MODEL_MASK_GROWTH}[name]
        assert info["prompts"].get("largest_piece_labels") == {"file": None, "folder": [], "auto": [1, 2]}[name]
        assert ("surround only the largest piece of label(s) 1, 2" in printed) == (name == "auto")
        for case_id in _case_ids(images):
            pred, _ = read_image(out / f"{case_id}.nii.gz")
            assert pred.shape == read_image(labels / f"{case_id}.nii.gz")[0].shape
        evaluate([str(labels), str(out), "-d", "990", "-np", "1"])
        assert f"[prompts: {expected[name]}]" in capsys.readouterr().out
        assert read_json(out / "summary.json")["prompt_provenance"] == expected[name]

    # prompt-free prediction chooses among prompt-free configurations only: there are none
    one_line_error(capsys, predict, ["-i", str(images), "-o", str(tmp_path / "none"), "--amp", "off"],
                   "0 trained configurations")
    # ... but the prompted model itself still predicts without prompts (its class outputs were trained)
    main_from_modelfolder(["-m", str(env.results / MODEL), "-i", str(images), "-o", str(tmp_path / "free"), "--amp", "off"])
    assert read_json(tmp_path / "free" / "prediction_info.json")["prompts"]["provenance"] == "none"
    # a folder samunet_predict wrote, as masks: a prompt-free result makes model prompts, a result from
    # reference prompts stays ground_truth and cannot be relabelled
    for folder, provenance in (("free", "model"), ("file", "ground_truth")):
        out = tmp_path / f"from_{folder}"
        predict(["-i", str(images), "-o", str(out), "--amp", "off", "-npp", "1", "-nps", "1",
                 "--prompts", str(tmp_path / folder)])
        assert read_json(out / "prediction_info.json")["prompts"]["provenance"] == provenance
    one_line_error(capsys, predict, ["-i", str(images), "-o", str(tmp_path / "relabelled"), "--prompts",
                                     str(tmp_path / "file"), "--prompt-provenance", "user"],
                   "predicted from ground-truth prompts")
    one_line_error(capsys, predict, ["-i", str(images), "-o", str(tmp_path / "grown"), "--prompts", str(prompts_file),
                                     "--box-growth", "1"], "prompts.json: a prompts file gives its boxes as they are")
    # the growth: each side of a mask's box moves out by growth x the training jitter
    predictor = PromptedPredictor.from_model_folder([env.results / MODEL], ["0"])
    seg = np.zeros((3, 30, 30), np.int64)
    seg[1, 10:20, 12:18] = 1
    tight, grown = (predictor.prompts_from_mask(seg, growth)[0].box for growth in (0.5, MODEL_MASK_GROWTH))
    jitter = predictor.rule.jitter(6, predictor.mapper.size)
    assert grown[0] < tight[0] and grown[2] > tight[2]
    assert tight[0] - grown[0] == pytest.approx((MODEL_MASK_GROWTH - 0.5) * jitter)


def test_auto_takes_its_first_pass_from_the_prompt_free_configuration_beside_it(prompted, env, tmp_path, capsys,
                                                                                monkeypatch):
    """With a configuration trained without prompts next to the prompted one (same plan, the folds asked
    for), `auto`'s first pass is that model's (it mirrors as it was trained); otherwise the prompted model's."""
    _, images = prompted
    train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "3", "--val-slices", "4"), show_progress=False)
    counterpart = env.results / "Dataset990_Synthetic" / "decoder__tiny"
    first_passes = []
    original = SlicePredictor.predict_preprocessed

    def recorded(self, data):
        first_passes.append(type(self).__name__)
        return original(self, data)

    monkeypatch.setattr(SlicePredictor, "predict_preprocessed", recorded)
    out = tmp_path / "auto"
    predict(["-i", str(images), "-o", str(out), "--amp", "off", "-npp", "1", "-nps", "1", "--prompts", "auto"])
    info = read_json(out / "prediction_info.json")
    assert info["prompts"]["first_pass"] == str(counterpart) and f"auto's first pass: {counterpart}" in capsys.readouterr().out
    assert first_passes == ["SlicePredictor"] * len(_case_ids(images))  # the prompt-free model, once a case
    assert info["mirroring_axes"] == read_json(counterpart / "fold_0" / "checkpoint_final.json")["mirroring_axes"]

    # trained with another plan: its preprocessing may differ, so the prompted model's own output is used
    plan = read_json(counterpart / "samunet_plans.json")
    write_json(dict(plan, note="another plan"), counterpart / "samunet_plans.json")
    first_passes.clear()
    predict(["-i", str(images), "-o", str(tmp_path / "own"), "--amp", "off", "-npp", "1", "-nps", "1", "--prompts", "auto"])
    info = read_json(tmp_path / "own" / "prediction_info.json")
    assert info["prompts"]["first_pass"] == "the prompted model's own prompt-free output"
    assert first_passes == ["PromptedPredictor"] * len(_case_ids(images)) and info["mirroring_axes"] == []


def test_an_empty_mask_prompts_nothing_and_gives_background(prompted, tmp_path):
    raw, images = prompted
    masks = tmp_path / "masks"
    masks.mkdir()
    for case_id in _case_ids(images):
        label, geometry = read_image(raw / "labelsTr" / f"{case_id}.nii.gz")
        write_image(np.zeros_like(label), geometry, masks / f"{case_id}.nii.gz")
    predict(["-i", str(images), "-o", str(tmp_path / "p"), "--amp", "off", "--prompts", str(masks)])
    for case_id in _case_ids(images):
        assert not read_image(tmp_path / "p" / f"{case_id}.nii.gz")[0].any()


def test_boxes_from_a_models_masks_surround_only_the_largest_piece_of_a_one_piece_class(prompted, env, tmp_path,
                                                                                         monkeypatch):
    plan = read_json(env.results / MODEL / "samunet_plans.json")
    assert plan["single_component_labels"] == [1, 2]  # the phantoms: one ellipsoid per class
    # which sources draw boxes around the largest piece only: a model's masks, never a user's
    assert prompt_source("auto", plan, ".nii.gz").largest_piece_labels == [1, 2]
    assert prompt_source(str(tmp_path), plan, ".nii.gz", "model").largest_piece_labels == [1, 2]
    assert prompt_source(str(tmp_path), plan, ".nii.gz").largest_piece_labels == []

    predictor = PromptedPredictor.from_model_folder([env.results / MODEL], ["0"])
    first = np.zeros((3, 8, 30, 30), np.float32)
    first[0] = 1
    first[:, 1:5, 10:20, 10:20] = np.array([0, 1, 0])[:, None, None, None]  # class 1 on slices 1..4
    first[:, 7, 2:4, 2:4] = np.array([0, 1, 0])[:, None, None]  # a small false positive on slice 7
    monkeypatch.setattr(predictor, "predict_preprocessed", lambda data: first)
    prompted_slices = {}
    monkeypatch.setattr(predictor, "predict_with_prompts", lambda data, prompts, volume_key: prompted_slices.setdefault(
        volume_key, sorted({(p.slice_index, p.label) for p in prompts})))
    for labels, case_id in (([1], "one_piece"), ([], "any")):
        AutoPrompts(single_component_labels=labels).predict(predictor, case_id, np.zeros((1, 8, 30, 30)), {})
    assert prompted_slices == {"one_piece": [(s, 1) for s in range(1, 5)], "any": [(s, 1) for s in (1, 2, 3, 4, 7)]}


def _prompts(cases, coordinates="voxel"):
    return {"format": "samunet-prompts-1", "coordinates": coordinates, "provenance": "user", "cases": cases}


@pytest.mark.parametrize("cases, message", [
    ({"nosuchcase": {"1": {"boxes": [[0, 0, 0, 3, 3, 3]]}}}, "prompts for case(s) not in the input folder: nosuchcase"),
    ({"{case}": {"tumour": {"boxes": [[0, 0, 0, 3, 3, 3]]}}}, "unknown class 'tumour'"),
    ({"{case}": {"1": {"boxes": [[0, 0, 0, 3, 3, 99]]}}}, "leaves the image"),
    ({"{case}": {"1": {"boxes": [[5, 0, 0, 3, 3, 3]]}}}, "has a corner below the other"),
    ({"{case}": {"1": {"points": [[1, 1, -4, 1]]}}}, "lies outside the image"),
    ({"{case}": {"1": {"points": [[1, 1, 1, 2]]}}}, "fourth number is 1 (inside) or 0"),
    ({"{case}": {"1": {"boxes": [[1, 2, 3]]}}}, "expected a list of 6 numbers"),
    ({"{case}": {"1": {"box": [[0, 0, 0, 3, 3, 3]]}}}, "unknown field(s) box"),
])
def test_bad_prompts_files_are_one_line_errors(prompted, tmp_path, capsys, cases, message):
    _, images = prompted
    case_id = _case_ids(images)[0]
    path = tmp_path / "bad.json"
    write_json(_prompts({k.replace("{case}", case_id): v for k, v in cases.items()}), path)
    one_line_error(capsys, predict, ["-i", str(images), "-o", str(tmp_path / "p"), "--amp", "off", "--prompts", str(path)],
                   str(path), message)
    assert not (tmp_path / "p" / f"{case_id}.nii.gz").exists()


def test_a_prompts_file_for_some_cases_predicts_those_only(prompted, tmp_path, capsys):
    raw, images = prompted
    case_id = _case_ids(images)[0]
    label, _ = read_image(raw / "labelsTr" / f"{case_id}.nii.gz")
    z, y, x = np.nonzero(label == 1)
    box = [int(x.min()), int(y.min()), int(z.min()), int(x.max()), int(y.max()), int(z.max())]
    write_json(_prompts({case_id: {"1": {"boxes": [box]}}}), tmp_path / "one.json")
    predict(["-i", str(images), "-o", str(tmp_path / "p"), "--amp", "off", "--prompts", str(tmp_path / "one.json")])
    assert f"no prompts for {len(_case_ids(images)) - 1} case(s)" in capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "p").glob("*.nii.gz"))
    assert written == [f"{case_id}.nii.gz"]
    pred, _ = read_image(tmp_path / "p" / f"{case_id}.nii.gz")
    assert set(np.unique(pred)) <= {0, 1}  # only class 1 was prompted


def test_segmenter_reuses_the_volumes_encoder_outputs_across_clicks(prompted, env, monkeypatch):
    import SimpleITK as sitk

    from samunet.inference import Segmenter

    raw, images = prompted
    case_id = _case_ids(images)[0]
    path = images / f"{case_id}_0000.nii.gz"
    label, geometry = read_image(raw / "labelsTr" / f"{case_id}.nii.gz")
    z, y, x = np.nonzero(label == 1)
    box = [int(x.min()), int(y.min()), int(z.min()), int(x.max()), int(y.max()), int(z.max())]
    segmenter = Segmenter.from_model_folder(env.results / MODEL, device="cpu", amp="off")
    model = segmenter.predictor.models[0]
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda images: encoded.append(len(images)) or encode(images))

    first = segmenter.segment(path, boxes={"1": [box]})
    image = sitk.ReadImage(str(path))
    assert first.GetSize() == image.GetSize() and first.GetSpacing() == pytest.approx(image.GetSpacing())
    assert first.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(first))) <= {0, 1}
    slices = sum(encoded)
    assert slices > 0
    # a click inside the box, from an in-memory image of the same volume: decoded, not encoded again
    click = [int(x[0]), int(y[0]), int(z[0]), 0]
    second = segmenter.segment(image, boxes={"1": [box]}, points={"1": [click]})
    assert sum(encoded) == slices and second.GetSize() == first.GetSize()
    # another volume is encoded
    other = _case_ids(images)[1]
    zo, yo, xo = np.nonzero(read_image(raw / "labelsTr" / f"{other}.nii.gz")[0] == 2)
    segmenter.segment(images / f"{other}_0000.nii.gz", points={"2": [[int(xo[0]), int(yo[0]), int(zo[0]), 1]]})
    assert sum(encoded) > slices
    with pytest.raises(SamunetError, match="unknown class 'tumour'"):
        segmenter.segment(path, boxes={"tumour": [box]})
