"""Test-time mirroring only along the axes a model's training mirrored: recorded in the checkpoint, used by
prediction, the final validation and find_best_configuration; ensembles use the intersection."""
import json

import numpy as np
import pytest
import torch

from samunet.file_io import read_json
from samunet.inference.predict_cli import main as predict
from samunet.inference.predictor import SlicePredictor
from samunet.run_training import train
from samunet.trainers.distributed import DistInfo
from samunet.trainers.trainer import SamTrainer, TrainConfig

from training_helpers import prepare_dataset, train_args

ALL_FLIPS = [(), (-2,), (-1,), (-2, -1)]


@pytest.fixture
def dataset(make_dataset, env):
    return prepare_dataset(make_dataset, env, num_cases=4)


def configuration(env, name):
    return env.results / "Dataset990_Synthetic" / name


def flips_seen(predictor, volume=None, bright=lambda x: torch.ones(len(x), dtype=torch.bool)):
    """Run a volume (default: three asymmetric slices, one batch) through `predictor`, its models predicting
    class 1 on the images `bright` picks (B,) and background elsewhere (so mirrored passes run only near
    foreground); returns, per encoder call, which flip of which mapped slices the model was given: (tensor
    dims flipped, slice indices), or None when it matches none."""
    volume = np.random.default_rng(0).normal(size=(1, 3, 20, 17)).astype(np.float32) if volume is None else volume
    images = predictor.mapper.images([predictor.mapper.planes(volume, s) for s in range(volume.shape[1])])
    seen = []

    def force(module, args, logits):  # the head decodes what the encoder was last given (no fusion)
        forced = torch.zeros_like(logits)
        forced[:, 0] = 1.0
        picked = bright(seen[-1])
        forced[picked, 0], forced[picked, 1] = 0.0, 1.0
        return forced * 100

    for model in predictor.models:  # unit input normalisation: the encoder sees the mapped images
        model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        model.head.register_forward_hook(force)
    predictor.predict_preprocessed(volume)

    def which(x):
        for first in range(len(images) - len(x) + 1):
            part = images[first : first + len(x)]
            for f in ALL_FLIPS:
                if torch.equal(x, part.flip(f) if f else part):
                    return f if len(x) == len(images) else (f, list(range(first, first + len(x))))
        return None

    return [which(x) for x in seen]


def test_checkpoints_record_what_training_mirrored_and_prediction_follows(dataset, env, tmp_path, capsys):
    # cached decoder: slices as preprocessed, never mirrored; uncached (augmented) linear head: both axes
    train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "4"), show_progress=False)
    train(train_args("linear_head", "--no-cache", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "4"),
          show_progress=False)
    train(train_args("cnn_head", "--no-cache", "--no-augmentation", "--epochs", "1", "--iters-per-epoch", "1",
                     "--val-slices", "4"), show_progress=False)
    decoder, linear, cnn = (configuration(env, f"{s}__tiny") for s in ("decoder", "linear_head", "cnn_head"))
    assert read_json(decoder / "fold_0" / "checkpoint_final.json")["mirroring_axes"] == []
    assert read_json(linear / "fold_0" / "checkpoint_final.json")["mirroring_axes"] == [0, 1]
    assert read_json(cnn / "fold_0" / "checkpoint_final.json")["mirroring_axes"] == []
    # the final validation predicts as samunet_predict does
    assert read_json(decoder / "fold_0" / "validation" / "summary.json")["mirroring_axes"] == []
    assert read_json(linear / "fold_0" / "validation" / "summary.json")["mirroring_axes"] == [0, 1]

    assert flips_seen(SlicePredictor.from_model_folder(decoder, ["0"])) == [()]
    assert sorted(flips_seen(SlicePredictor.from_model_folder(linear, ["0"]))) == sorted(ALL_FLIPS)
    assert flips_seen(SlicePredictor.from_model_folder(linear, ["0"], use_tta=False)) == [()]
    assert flips_seen(SlicePredictor.from_model_folder([decoder, linear], ["0"])) == [(), ()]  # intersection: none

    images = env.raw / "Dataset990_Synthetic" / "imagesTr"
    predict(["-i", str(images), "-o", str(tmp_path / "p1"), "-s", "linear_head", "-b", "tiny", "-npp", "1", "-nps", "1"])
    assert "test-time mirroring of slice rows and columns, as in training (4 passes" in capsys.readouterr().out
    info = read_json(tmp_path / "p1" / "prediction_info.json")
    assert info["tta"] is True and info["mirroring_axes"] == [0, 1]
    assert info["mirrored_slices"] == "near predicted foreground"
    predict(["-i", str(images), "-o", str(tmp_path / "p4"), "-s", "linear_head", "-b", "tiny", "-npp", "1", "-nps", "1",
             "--tta-all-slices"])
    assert "4 passes on every slice" in capsys.readouterr().out
    assert read_json(tmp_path / "p4" / "prediction_info.json")["mirrored_slices"] == "all"
    predict(["-i", str(images), "-o", str(tmp_path / "p2"), "-s", "decoder", "-b", "tiny", "-npp", "1", "-nps", "1"])
    assert "test-time mirroring: none (the model was not trained on mirrored slices)" in capsys.readouterr().out
    assert read_json(tmp_path / "p2" / "prediction_info.json")["mirroring_axes"] == []
    predict(["-i", str(images), "-o", str(tmp_path / "p3"), "-s", "decoder", "linear_head", "-b", "tiny",
             "-npp", "1", "-nps", "1"])
    assert read_json(tmp_path / "p3" / "prediction_info.json")["mirroring_axes"] == []


def test_mirrored_passes_run_only_near_predicted_foreground(dataset, env):
    train(train_args("linear_head", "--no-cache", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"),
          show_progress=False)
    predictor = SlicePredictor.from_model_folder(configuration(env, "linear_head__tiny"), ["0"])
    assert predictor.mirroring_axes == [0, 1]
    volume = np.random.default_rng(1).normal(size=(1, 8, 20, 17)).astype(np.float32)
    volume[:, 6] = 50.0  # windowed to 1: the slice the model finds foreground on (the middle input channel)
    seen = flips_seen(predictor, volume, bright=lambda x: x[:, 1].mean((1, 2)) > 0.9)
    assert seen[0] == ()  # the un-mirrored pass: all 8 slices in one batch
    assert sorted(seen[1:]) == sorted((f, [5, 6, 7]) for f in ALL_FLIPS[1:])  # then slice 6 and its neighbours
    assert flips_seen(predictor, volume, bright=lambda x: torch.zeros(len(x), dtype=torch.bool)) == [()]


def test_an_ensemble_mirrors_along_the_axes_all_members_allow(dataset, env):
    train(train_args("linear_head", "--no-cache", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"),
          show_progress=False)
    folder = configuration(env, "linear_head__tiny")
    rows_only = SlicePredictor.from_model_folder(folder, ["0"]).models
    both = SlicePredictor.from_model_folder(folder, ["0"]).models
    rows_only[0].metadata["mirroring_axes"] = [0]
    predictor = SlicePredictor(rows_only + both, read_json(folder / "samunet_plans.json"),
                               read_json(folder / "dataset.json"))
    assert predictor.mirroring_axes == [0]
    assert flips_seen(predictor) == [(), (), (-2,), (-2,)]  # each model un-mirrored, then rows flipped, nothing else


def test_an_older_checkpoint_without_the_record_is_not_mirrored(dataset, env, tmp_path, capsys):
    train(train_args("linear_head", "--no-cache", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"),
          show_progress=False)
    path = configuration(env, "linear_head__tiny") / "fold_0" / "checkpoint_final.pth"
    payload = torch.load(path, weights_only=True)
    del payload["metadata"]["mirroring_axes"]  # as samunet wrote checkpoints before the record
    torch.save(payload, path)
    capsys.readouterr()
    predict(["-i", str(env.raw / "Dataset990_Synthetic" / "imagesTr"), "-o", str(tmp_path / "p"), "-npp", "1", "-nps", "1"])
    captured = capsys.readouterr()
    notices = [line for line in captured.err.splitlines() if "records no training augmentation" in line]
    assert len(notices) == 1 and str(path) in notices[0] and "predicted without mirroring" in notices[0]
    assert "test-time mirroring: none" in captured.out
    assert read_json(tmp_path / "p" / "prediction_info.json")["mirroring_axes"] == []
    assert flips_seen(SlicePredictor.from_model_folder(path.parents[1], ["0"])) == [()]


def test_cache_mirroring_trains_on_mirrored_embeddings_with_mirrored_labels(dataset, env):
    config = TrainConfig(strategy="decoder", backbone="tiny", fold="0", epochs=1, iters_per_epoch=4, batch_size=4,
                         cache_mirroring=True, val_slices=4)
    trainer = SamTrainer(config, dataset, env.results / "m" / "fold_0", torch.device("cpu"), DistInfo(),
                         show_progress=False)
    inputs = trainer.inputs
    assert trainer.model.metadata["mirroring_axes"] == [0, 1]
    trainer.prepare()
    cases = sorted(set(trainer.train_cases + trainer.val_cases))
    for sub in ("mirror_0", "mirror_1", "mirror_01"):
        assert sorted(p.stem for p in (inputs.cache.folder / sub).glob("*.npy")) == cases
    # each mirrored embedding is the encoder's output for the mirrored slice (not the mirrored embedding)
    spec = trainer.val_specs[0]
    image = inputs.label_source[spec][0]
    for mirror in ((), (0,), (1,), (0, 1)):
        stored = np.load(inputs.cache.files(spec.case_id, mirror)[0])[spec.slice_index].astype(np.float32)
        flipped = np.ascontiguousarray(np.flip(image, [a + 1 for a in mirror]))  # (C, H, W)
        encoded = inputs.encode(trainer.mapper.images([flipped]))[0].numpy()
        np.testing.assert_allclose(stored, encoded, atol=1e-2, rtol=1e-2)
        if mirror:
            unmirrored = np.load(inputs.cache.files(spec.case_id)[0])[spec.slice_index].astype(np.float32)
            assert np.abs(stored - unmirrored).max() > 0.1
    # a training batch pairs each slice's embedding and label in the same mirroring, all four in use
    batches = trainer.sampler.epoch_batches(0, 4, 4)
    seen = set()
    for specs, (embeddings, targets) in zip(batches, trainer.epoch_inputs(batches)):
        for i, spec in enumerate(specs):
            mirror = inputs.mirror_of(spec)
            seen.add(mirror)
            stored = np.load(inputs.cache.files(spec.case_id, mirror)[0])[spec.slice_index]
            np.testing.assert_array_equal(embeddings[i].numpy(), stored.astype(np.float32))
            label = np.flip(inputs.label_source[spec][1], mirror)
            assert torch.equal(targets[i], trainer.mapper.labels([np.ascontiguousarray(label)])[0])
    assert seen == {(), (0,), (1,), (0, 1)}
    trainer.run()
    assert read_json(env.results / "m" / "fold_0" / "checkpoint_final.json")["mirroring_axes"] == [0, 1]
    # a run without mirroring shares the cache's unmirrored embeddings and encodes nothing new
    plain = SamTrainer(TrainConfig(strategy="linear_head", backbone="tiny", fold="0"), dataset,
                       env.results / "p", torch.device("cpu"), DistInfo(), show_progress=False)
    assert plain.inputs.cache.folder == inputs.cache.folder and plain.inputs.mirrors == [()]
    assert plain.inputs.cache.fill(cases, plain.model, plain.mapper, plain.autocast, mirrors=plain.inputs.mirrors) == 0


def test_best_configuration_names_the_mirroring_prediction_will_use(dataset, env, capsys):
    from samunet.evaluation.find_best_configuration import main as find_best

    train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"), show_progress=False)
    train(train_args("linear_head", "--no-cache", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "4"),
          show_progress=False)
    find_best(["990", "-f", "0"])
    best = read_json(configuration(env, "best_configuration.json"))
    expected = {"decoder__tiny": [], "linear_head__tiny": [0, 1], "decoder__tiny+linear_head__tiny": []}
    assert best["mirroring_axes"] == expected[best["configuration"]], json.dumps(best)
