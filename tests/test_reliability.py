"""Faults, concurrency and hostile input, one test per class of failure: each checks the exit status, the
one-line message, that inputs are unchanged and that no file under a final name is partial.

Faults are injected cheaply and deterministically: truncated and NaN files, patched writes that fail like
a full disk or a read-only folder, two processes started together, SIGKILL at a chosen point."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from samunet import run_training
from samunet.dataset_conversion.convert_2d_images import main as convert_2d
from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.evaluation.evaluate_cli import main as evaluate
from samunet.file_io import is_temporary, read_json, write_json
from samunet.imageio import Geometry, read_image, write_image
from samunet.inference.predict_cli import main as predict
from samunet.preprocessing.storage import case_files
from samunet.run_training import main as samunet_train
from samunet.run_training import train
from samunet.trainers.distributed import DistInfo
from samunet.trainers.trainer import SamTrainer, TrainConfig

from conftest import files_under
from training_helpers import one_line_error, prepare_dataset, train_args

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temporaries(folder):
    return [p for p in folder.rglob("*") if is_temporary(p) or p.name.endswith(".partial")] == []


@pytest.fixture
def trained(make_dataset, env, tmp_path):
    """A tiny linear_head model and a copy of the raw images as 'test' input."""
    prepare_dataset(make_dataset, env, num_cases=4)
    train(train_args("linear_head", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "4"), show_progress=False)
    images = tmp_path / "imagesTs"
    images.mkdir()
    for p in (env.raw / "Dataset990_Synthetic" / "imagesTr").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    return images


def test_concurrent_preprocessing_waits_and_leaves_every_case_whole(make_dataset, env):
    """Two plan_and_preprocess runs of one dataset started together: both succeed, one waits for the
    other's lock; every case opens; no temporary file is left."""
    make_dataset(num_cases=12, shape=(20, 96, 80))
    command = [sys.executable, "-c", "from samunet.plan_and_preprocess import main; main()", "-d", "990", "-np", "1"]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ) for _ in range(2)]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    assert sum("waiting for" in e for e in errors) >= 1
    folder = env.preprocessed / "Dataset990_Synthetic"
    from samunet.preprocessing.storage import is_case_current, load_case
    for case_id in read_json(folder / "dataset_fingerprint.json")["case_ids"]:
        data, seg, props = load_case(folder / "samunet_2d", case_id)
        assert seg.shape == data.shape[1:] and is_case_current(folder / "samunet_2d", case_id, props["stamp"])
    assert no_temporaries(env.preprocessed)


def test_a_damaged_preprocessed_case_is_redone(make_dataset, env):
    from samunet.plan_and_preprocess import main as plan_and_preprocess

    make_dataset(num_cases=3)
    plan_and_preprocess(["-d", "990", "-np", "1"])
    folder = env.preprocessed / "Dataset990_Synthetic" / "samunet_2d"
    _, seg_path, _ = case_files(folder, "synthetic_001")
    seg_path.write_bytes(seg_path.read_bytes()[:100])  # what a concurrent or killed writer used to leave
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    plan_and_preprocess(["-d", "990", "-np", "1"])
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert after[seg_path.name] != before[seg_path.name]
    assert after["synthetic_000_seg.b2nd"] == before["synthetic_000_seg.b2nd"]
    from samunet.preprocessing.storage import load_case
    assert load_case(folder, "synthetic_001")[1].ndim == 3


def test_damaged_inputs_are_found_on_the_default_path(trained, tmp_path, capsys):
    image = trained / "synthetic_002_0000.nii.gz"
    image.write_bytes(image.read_bytes()[:-200])  # truncated: SimpleITK alone would fill in zeros
    arr, geometry = read_image(trained / "synthetic_003_0000.nii.gz")
    arr = arr.astype(np.float32)
    arr[0, 0, 0] = np.nan  # SimpleITK alone reads it as 0
    write_image(arr, geometry, trained / "synthetic_003_0000.nii.gz")
    inputs = hashes(trained)
    with pytest.raises(SystemExit) as exit_info:
        predict(["-i", str(trained), "-o", str(tmp_path / "p"), "-npp", "1", "-nps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "synthetic_002_0000.nii.gz: truncated or damaged" in err
    assert "synthetic_003_0000.nii.gz: contains NaN or infinite values" in err and "2 case(s) failed" in err
    assert sorted(p.name for p in (tmp_path / "p").glob("*.nii.gz")) == ["synthetic_000.nii.gz", "synthetic_001.nii.gz"]
    assert hashes(trained) == inputs


def test_interrupted_and_failed_writes_leave_nothing_under_final_names(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "p"
    real_savez = np.savez_compressed

    def killed_halfway(file, **arrays):  # a partial file, then the process 'dies'
        real_savez(file, **arrays)
        file.truncate(file.tell() // 2)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(np, "savez_compressed", killed_halfway)
        predict(["-i", str(trained), "-o", str(out), "--save-probabilities", "-npp", "1", "-nps", "1"])
    assert not list(out.glob("*.npz")) and not list(out.glob("*.nii.gz")) and no_temporaries(out)
    # --continue-prediction then writes every case whole
    predict(["-i", str(trained), "-o", str(out), "--save-probabilities", "--continue-prediction", "-npp", "1", "-nps", "1"])
    for case in ("synthetic_000", "synthetic_003"):
        assert np.load(out / f"{case}.npz")["probabilities"].shape[0] == 3

    # a full disk: SimpleITK writes nothing (or raises), the write fails in one line, no 0-byte file stays
    import SimpleITK

    monkeypatch.setattr(SimpleITK, "WriteImage", lambda image, path, *a, **k: open(path, "wb").close())
    one_line_error(capsys, predict, ["-i", str(trained), "-o", str(tmp_path / "q"), "-npp", "1", "-nps", "1"],
                   "synthetic_000.nii.gz", "empty file (is the disk full?)")
    assert not list((tmp_path / "q").glob("*.nii.gz")) and no_temporaries(tmp_path / "q")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "r" / "synthetic_000.nii.gz"))

    monkeypatch.setattr(SimpleITK, "WriteImage", disk_full)
    one_line_error(capsys, predict, ["-i", str(trained), "-o", str(tmp_path / "r"), "-npp", "1", "-nps", "1"],
                   "synthetic_000.nii.gz: No space left on device")


def test_a_full_disk_in_preprocessing_and_training_gives_one_line(make_dataset, env, capsys, monkeypatch):
    import blosc2

    from samunet.plan_and_preprocess import main as plan_and_preprocess

    make_dataset(num_cases=3)
    with monkeypatch.context() as patch:
        patch.setattr(blosc2, "asarray", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Error while writing")))
        one_line_error(capsys, plan_and_preprocess, ["-d", "990", "-np", "1"], "synthetic_000.b2nd: cannot be written")
    folder = env.preprocessed / "Dataset990_Synthetic" / "samunet_2d"
    assert no_temporaries(folder) and not list(folder.glob("*.b2nd"))
    plan_and_preprocess(["-d", "990", "-np", "1"])
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(
            RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")))
        one_line_error(capsys, samunet_train, ["990", "linear_head", "0", "-b", "tiny", "--epochs", "1",
                                               "--iters-per-epoch", "1", "-np", "0"],
                       "checkpoint_latest.pth: cannot be written")
    fold = env.results / "Dataset990_Synthetic" / "linear_head__tiny" / "fold_0"
    assert not list(fold.glob("*.pth")) and no_temporaries(fold)


def test_a_killed_prediction_leaves_no_partial_file(trained, tmp_path):
    out = tmp_path / "p"
    command = [sys.executable, "-c", "from samunet.inference.predict_cli import main; main()", "-i", str(trained),
               "-o", str(out), "--save-probabilities", "-npp", "1", "-nps", "1"]
    run = subprocess.Popen(command, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.npz")):
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    final = [p for p in out.iterdir() if not is_temporary(p)]  # kill -9 may leave a temporary file beside them
    for npz in (p for p in final if p.suffix == ".npz"):  # whatever is there under a final name is whole
        assert np.load(npz)["probabilities"].ndim == 4
    for label_map in (p for p in final if p.name.endswith(".nii.gz")):
        assert (out / f"{label_map.name[:-7]}.npz").is_file()
        read_image(label_map)
    predict(["-i", str(trained), "-o", str(out), "--save-probabilities", "--continue-prediction", "-npp", "1", "-nps", "1"])
    assert len(list(out.glob("*.nii.gz"))) == 4 and len(list(out.glob("*.npz"))) == 4
    assert no_temporaries(out)  # continuing clears what the killed run left


def test_no_overwrite_of_what_the_command_was_not_asked_to_write(trained, env, tmp_path, capsys):
    labels = env.raw / "Dataset990_Synthetic" / "labelsTr"
    before = hashes(labels)
    one_line_error(capsys, predict, ["-i", str(trained), "-o", str(labels)], str(labels), "--overwrite")
    one_line_error(capsys, evaluate, [str(labels), str(labels), "-l", "1", "-o", str(labels / "synthetic_000.nii.gz")],
                   "ending in .json")
    one_line_error(capsys, evaluate, [str(labels), str(labels), "-l", "1", "-o", str(labels / "summary.json")],
                   "inside the reference folder")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    one_line_error(capsys, evaluate, [str(labels), str(labels), "-l", "1", "-o", str(notes)],
                   "not a samunet_evaluate summary")
    assert hashes(labels) == before and notes.read_text() == '{"mine": 1}'
    # its own output folder is fine to write again
    out = tmp_path / "p"
    predict(["-i", str(trained), "-o", str(out), "-npp", "1", "-nps", "1"])
    predict(["-i", str(trained), "-o", str(out), "-npp", "1", "-nps", "1"])


def test_paths_from_files_and_names_stay_confined(env, tmp_path, capsys):
    task = tmp_path / "Task07_Evil"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    secret = tmp_path / "secret.nii.gz"
    write_image(np.zeros((4, 5, 6), np.uint8), GEOMETRY, secret)
    for name in ("a", "b"):
        write_image(np.zeros((4, 5, 6), np.uint8), GEOMETRY, task / "imagesTr" / f"{name}.nii.gz")
        write_image(np.zeros((4, 5, 6), np.uint8), GEOMETRY, task / "labelsTr" / f"{name}.nii.gz")
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "x"}}
    for image, fragment in (("../secret.nii.gz", "outside"), (str(secret), "outside"),
                            ("imagesTr/a.nii", "must name a .nii.gz file")):
        meta["training"] = [{"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"},
                            {"image": image, "label": "./labelsTr/a.nii.gz"}]
        (task / "dataset.json").write_text(json.dumps(meta))
        one_line_error(capsys, convert_msd, ["-i", str(task)], "dataset.json", fragment)
    pictures = tmp_path / "pictures"
    for sub in ("images", "masks"):
        (pictures / sub).mkdir(parents=True)
        from PIL import Image
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(pictures / sub / "a.png")
    one_line_error(capsys, convert_2d, ["-i", str(pictures), "-d", "700", "-n", "../../x"], "letters, digits")
    assert files_under(env.raw) == [] and not (tmp_path / "x").exists() and not list(tmp_path.glob("*Dataset*"))


def test_a_checkpoint_in_the_wrong_configuration_folder_is_refused(trained, env, tmp_path, capsys):
    train(train_args("cnn_head", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"), show_progress=False)
    results = env.results / "Dataset990_Synthetic"
    for suffix in (".pth", ".json"):
        (results / "cnn_head__tiny" / "fold_0" / f"checkpoint_final{suffix}").write_bytes(
            (results / "linear_head__tiny" / "fold_0" / f"checkpoint_final{suffix}").read_bytes())
    one_line_error(capsys, predict, ["-i", str(trained), "-o", str(tmp_path / "p"), "-s", "cnn_head", "-b", "tiny"],
                   "a checkpoint of linear_head__tiny", "folder of cnn_head__tiny")


def test_evaluation_is_strict_about_missing_cases_and_counts_false_positives(env, tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    empty, blob = np.zeros((6, 8, 8), np.uint8), np.zeros((6, 8, 8), np.uint8)
    blob[2:4, 2:5, 2:5] = 1
    write_image(blob, GEOMETRY, ref / "a.nii.gz")
    write_image(blob, GEOMETRY, pred / "a.nii.gz")
    write_image(empty, GEOMETRY, ref / "b.nii.gz")  # false positives only: b predicts a blob on nothing
    write_image(blob, GEOMETRY, pred / "b.nii.gz")
    write_image(blob, GEOMETRY, ref / "c.nii.gz")  # c has no prediction
    one_line_error(capsys, evaluate, [str(ref), str(pred), "-l", "1"], "no prediction for 1 reference case(s): c.nii.gz",
                   "--allow-missing")
    assert not (pred / "summary.json").exists()
    evaluate([str(ref), str(pred), "-l", "1", "--allow-missing"])
    summary = read_json(pred / "summary.json")
    assert summary["missing_predictions"] == ["c.nii.gz"]
    per_case = {c["prediction"].split("/")[-1]: c["metrics"]["1"] for c in summary["metric_per_case"]}
    diagonal = float(np.sqrt(6 ** 2 + 8 ** 2 + 8 ** 2))
    assert per_case["b.nii.gz"]["Dice"] == 0 and per_case["b.nii.gz"]["HD95"] == pytest.approx(diagonal)
    assert summary["mean"]["1"]["HD95"] == pytest.approx(diagonal / 2)  # counted in the mean


def test_os_errors_and_edited_files_give_one_line(trained, env, tmp_path, capsys, monkeypatch):
    import samunet.file_io

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "p"))

    with monkeypatch.context() as patch:
        patch.setattr(samunet.file_io.os, "replace", read_only)
        one_line_error(capsys, predict, ["-i", str(trained), "-o", str(tmp_path / "p"), "-npp", "1", "-nps", "1"],
                       f"{tmp_path / 'p'}: Permission denied")

    folder = env.preprocessed / "Dataset990_Synthetic"
    splits = read_json(folder / "splits_final.json")
    write_json([{"training": splits[0]["train"], "val": splits[0]["val"]}], folder / "splits_final.json")
    one_line_error(capsys, samunet_train, ["990", "decoder", "0", "-b", "tiny"], "splits_final.json", "'train'")
    write_json(splits, folder / "splits_final.json")
    seg = folder / "samunet_2d" / "synthetic_001_seg.b2nd"
    seg.rename(seg.with_suffix(".moved"))
    one_line_error(capsys, samunet_train, ["990", "decoder", "0", "-b", "tiny"], "synthetic_001_seg.b2nd: missing")
    seg.with_suffix(".moved").rename(seg)
    plan = read_json(folder / "samunet_plans.json")
    plan["intensity_mapping"]["window_per_channel"] = [[1.0, -1.0]]
    write_json(plan, folder / "samunet_plans.json")
    one_line_error(capsys, samunet_train, ["990", "decoder", "0", "-b", "tiny"], "samunet_plans.json",
                   "'intensity_mapping.window_per_channel'")
    plan["intensity_mapping"]["window_per_channel"] = [[-1.0, 1.0]]
    del plan["backbones"]
    write_json(plan, folder / "samunet_plans.json")
    one_line_error(capsys, samunet_train, ["990", "decoder", "0", "-b", "tiny"], "key 'backbones' is missing")
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "0", "--lr", "-1"])
    assert "must be a number > 0" in capsys.readouterr().err


def test_time_budget_holds_with_a_long_cache_fill_and_long_epochs(make_dataset, env, monkeypatch):
    """An encoder that takes 1 s a batch (on a clock that only encoder calls advance) makes the cache
    fill longer than a 15-second budget: the run says so, trains uncached, and stops mid-epoch within one
    iteration of the budget."""
    from types import SimpleNamespace

    from samunet.models.segmenter import SamSegmenter

    folder = prepare_dataset(make_dataset, env, num_cases=4, shape=(30, 28, 24))
    clock = [0.0]
    fake_time = SimpleNamespace(perf_counter=lambda: clock[0], strftime=time.strftime)
    monkeypatch.setattr("samunet.trainers.encoder_inputs.time", fake_time)
    monkeypatch.setattr("samunet.trainers.epoch_loop.time", fake_time)
    monkeypatch.setattr("samunet.trainers.embedding_cache.time", fake_time)
    original = SamSegmenter.encode

    def slow_encode(self, images):
        clock[0] += 1.0
        return original(self, images)

    monkeypatch.setattr(SamSegmenter, "encode", slow_encode)
    config = TrainConfig(strategy="decoder", backbone="tiny", fold="0", epochs=5, iters_per_epoch=1000, batch_size=4,
                         time_budget_minutes=0.25, val_slices=4)
    trainer = SamTrainer(config, folder, env.results / "fold_0", torch.device("cpu"), DistInfo(), show_progress=False)
    trainer.run()
    log = (env.results / "fold_0" / "training_log.txt").read_text()
    assert "encoding 103 slices would take ~0.4 min, more than the 0.2 min left" in log and "training without the cache" in log
    assert not trainer.inputs.cached and trainer.model.metadata["mirroring_axes"] == [0, 1]
    assert len(trainer.log["train_loss"]) == 1 and "not evaluated: time budget spent" in log  # cut mid-epoch
    assert 15 <= trainer.inputs.fill_seconds + trainer.log["epoch_seconds"][0] <= 15 + 1  # at most one iteration over


def test_continue_after_a_kill_in_the_final_validation_completes_it(make_dataset, env, monkeypatch, capsys):
    prepare_dataset(make_dataset, env, num_cases=4)
    calls = []

    def killed(*args):
        calls.append(1)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(run_training, "validate_fold", killed)
        samunet_train(["990", "linear_head", "0", "-b", "tiny", "--epochs", "1", "--iters-per-epoch", "1",
                       "--batch-size", "4", "-np", "0", "--amp", "off", "--val-slices", "4"])
    fold = env.results / "Dataset990_Synthetic" / "linear_head__tiny" / "fold_0"
    assert calls and (fold / "checkpoint_final.pth").is_file() and not (fold / "validation" / "summary.json").exists()
    samunet_train(["990", "linear_head", "0", "-b", "tiny", "--c", "--batch-size", "4", "-np", "0", "--amp", "off"])
    assert "running its final validation" in capsys.readouterr().out
    assert read_json(fold / "validation" / "summary.json")["metric_per_case"]
    samunet_train(["990", "linear_head", "0", "-b", "tiny", "--c", "--batch-size", "4", "-np", "0", "--amp", "off"])
    assert "training already finished" in capsys.readouterr().out


def test_a_second_training_of_a_running_fold_stops_in_one_line(make_dataset, env, capsys):
    from samunet.file_io import folder_lock

    prepare_dataset(make_dataset, env, num_cases=4)
    fold = env.results / "Dataset990_Synthetic" / "linear_head__tiny" / "fold_0"
    argv = ["990", "linear_head", "0", "-b", "tiny", "--epochs", "1", "--iters-per-epoch", "1", "-np", "0"]
    with folder_lock(fold, "samunet_train"):  # as a first run holds it
        one_line_error(capsys, samunet_train, argv, str(fold), "samunet_train", "is writing here")
    assert not fold.exists() or not list(fold.glob("*.pth"))
    samunet_train(argv)  # once the first run has ended, the fold trains
    assert (fold / "checkpoint_final.pth").is_file()
