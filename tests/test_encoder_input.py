"""Encoder input: neighbouring slices as context, any number of channels, the plan's projection."""
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samunet.dataset_conversion.dataset_writer import staged_dataset, write_dataset_json
from samunet.errors import SamunetError
from samunet.file_io import read_json, write_json
from samunet.imageio import Geometry, write_image
from samunet.inference.predict_cli import main as predict
from samunet.inference.predictor import SlicePredictor, resize_probabilities
from samunet.models.input_mapping import SEPARATE, EncoderInput, InputMapper, default_projection
from samunet.plan_and_preprocess import main as plan_and_preprocess
from samunet.planners.experiment_planner import CHANNEL_ENCODING, CONTEXT_SLICES, context_slices_for
from samunet.planners.plan_file import PlanView, check_plan
from samunet.preprocessing.storage import open_case
from samunet.run_training import train

from training_helpers import (TINY_INPUT, edit_encoder_input, input_source_trainers, one_line_error, prepare_dataset,
                              train_args)


def test_context_planes_are_the_neighbouring_slices_with_edges_replicated():
    volume = np.arange(2 * 5 * 3 * 4, dtype=np.float32).reshape(2, 5, 3, 4)  # (C, S, H, W)
    one = EncoderInput.default(1, 1)
    single = volume[:1]
    for z in range(5):
        expected = [single[0, max(z - 1, 0)], single[0, z], single[0, min(z + 1, 4)]]
        np.testing.assert_array_equal(one.planes(single, z), np.stack(expected))
    two = EncoderInput(2, tuple(map(tuple, default_projection(2, 2))))  # channel-major, 5 slices each
    planes = two.planes(volume, 0)
    assert planes.shape == (10, 3, 4)
    np.testing.assert_array_equal(planes[:5], volume[0, [0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(planes[5:], volume[1, [0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(EncoderInput.default(2).planes(volume, 3), volume[:, 3])


def test_default_projection_rule():
    assert default_projection(1, 0) == [[1.0]] * 3
    assert default_projection(1, 1) == [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
    assert default_projection(2, 0) == [[1.0, 0], [0, 1.0], [0.5, 0.5]]
    assert default_projection(4, 0) == [[0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]
    for channels in range(1, 9):
        for context in (0, 1, 2):
            rows = np.array(default_projection(channels, context))
            assert rows.shape == (3, channels * (2 * context + 1))
            np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-5)
            assert (rows.sum(0) > 0).all()  # every channel and neighbour reaches the encoder
    # with context: (below, slice, above), each averaged over the channels
    np.testing.assert_allclose(default_projection(2, 1), [[0.5, 0, 0, 0.5, 0, 0], [0, 0.5, 0, 0, 0.5, 0],
                                                          [0, 0, 0.5, 0, 0, 0.5]])


def test_mapper_feeds_neighbours_as_the_three_channels():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 6, 20, 14)).astype(np.float32)
    mapper = InputMapper([[-1.0, 2.0]], EncoderInput.default(1, 1), (0, 255), 32, torch.device("cpu"))
    image = mapper.images([mapper.planes(volume, 0)])[0]
    for channel, z in enumerate((0, 0, 1)):
        x = ((torch.as_tensor(volume[0, z]) + 1) / 3).clamp(0, 1)[None, None] * 255
        torch.testing.assert_close(image[channel], F.interpolate(x, size=(32, 32), mode="bilinear")[0, 0])
    # many planes (projected before the resize) and few (after) give the same result
    wide = InputMapper([[-1.0, 2.0]] * 5, EncoderInput.default(5), (0, 1), 16, torch.device("cpu"))
    planes = rng.normal(size=(5, 9, 11)).astype(np.float32)
    windowed = ((torch.as_tensor(planes) + 1) / 3).clamp(0, 1)
    resized = F.interpolate(windowed[None], size=(16, 16), mode="bilinear")[0]
    expected = torch.einsum("kp,phw->khw", torch.tensor(default_projection(5, 0)), resized)
    torch.testing.assert_close(wide.images([planes])[0], expected)


def _fingerprint(shapes, spacings, channels=1):
    return {"shapes_after_crop": shapes, "spacings": spacings,
            "channel_names": {str(c): "MRI" for c in range(channels)}}


def test_planner_gives_context_to_3d_single_channel_data_only():
    volumes = _fingerprint([[20, 64, 64], [24, 60, 64]], [[3.0, 1.0, 1.0]] * 2)
    assert context_slices_for(volumes, 0) == CONTEXT_SLICES
    assert context_slices_for(volumes, 0, wanted=2) == 2  # samunet_plan_and_preprocess --context-slices 2
    assert context_slices_for(_fingerprint([[1, 64, 64]] * 2, [[1.0, 1.0, 1.0]] * 2), 0, 1) == 0  # one slice
    assert context_slices_for(_fingerprint([[3, 64, 64]] * 2, [[999.0, 1.0, 1.0]] * 2), 0, 1) == 0  # 2D spacing
    assert context_slices_for(_fingerprint([[20, 64, 64]] * 2, [[3.0, 1.0, 1.0]] * 2, channels=2), 0, 1) == 0
    assert context_slices_for(volumes, 1, 1) == 1  # counted along the slicing axis the plan chose


def test_a_bad_encoder_input_in_the_plan_is_one_line(make_dataset, env):
    folder = prepare_dataset(make_dataset, env, num_cases=3)
    plan = read_json(folder / "samunet_plans.json")
    assert plan["encoder_input"]["context_slices"] == CONTEXT_SLICES  # anisotropic 3D phantoms, one channel
    assert plan["encoder_input"]["projection"] == default_projection(1, CONTEXT_SLICES)
    check_plan(plan, "plan")
    for bad in ({"context_slices": -1, "projection": [[1]] * 3},
                {"context_slices": 1, "projection": [[1.0]] * 3},  # 3 planes need 3 weights per row
                {"context_slices": 0, "projection": [[2.0]] * 3}):  # rows must sum to 1
        with pytest.raises(SamunetError, match="plan: 'encoder_input"):
            check_plan({**plan, "encoder_input": bad}, "plan")
    del plan["encoder_input"]  # a plan from before context: the slice alone, the default projection
    assert PlanView(plan).encoder_input == EncoderInput.default(1)


def use_context(folder, context):
    """`context` neighbours each side, the default projection for them."""
    return edit_encoder_input(folder, **EncoderInput.default(1, context).fields())


def test_cached_and_uncached_training_see_the_same_context(make_dataset, env):
    folder = prepare_dataset(make_dataset, env, num_cases=4)
    use_context(folder, 1)
    cached, uncached, whole = input_source_trainers(folder, env)
    assert cached.inputs.cache.key["encoder_input"]["context_slices"] == 1  # a cache of its own
    cached.prepare()
    specs = cached.val_specs[:4]
    embeddings, targets = cached.plain_inputs(specs)
    encoded, same_targets = uncached.plain_inputs(specs)
    assert torch.equal(targets, same_targets)
    torch.testing.assert_close(embeddings, encoded, atol=2e-2, rtol=1e-2)  # the cache holds fp16
    # and the encoder input of a slice (here through the whole-model path) is z-1, z, z+1 of the volume
    data = open_case(cached.data_folder, specs[0].case_id)[0][...]
    z, last = specs[0].slice_index, data.shape[1] - 1
    images, _ = whole.plain_inputs(specs[:1])
    expected = cached.mapper.images([data[0, [max(z - 1, 0), z, min(z + 1, last)]]])
    torch.testing.assert_close(images, expected)


def test_prediction_feeds_the_model_what_training_fed_it(make_dataset, env):
    folder = prepare_dataset(make_dataset, env, num_cases=4)
    use_context(folder, 1)
    trainer = train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "1", "--val-slices", "2"),
                    show_progress=False)
    plan = read_json(folder / "samunet_plans.json")
    assert plan["encoder_input"]["context_slices"] == 1
    data, _, _ = open_case(trainer.data_folder, trainer.val_cases[0])
    data = data[...]
    predictor = SlicePredictor([trainer.model], plan, {}, use_tta=False)
    probs = predictor.predict_preprocessed(data)
    # by hand: slices z-1, z, z+1 (edges repeated) windowed, resized, scaled, through the model
    lo, hi = plan["intensity_mapping"]["window_per_channel"][0]
    last = data.shape[1] - 1
    for z in (0, last // 2, last):
        planes = torch.as_tensor(data[0, [max(z - 1, 0), z, min(z + 1, last)]])
        x = F.interpolate(((planes - lo) / (hi - lo)).clamp(0, 1)[None], size=(TINY_INPUT,) * 2, mode="bilinear")
        with torch.no_grad():
            expected = resize_probabilities(torch.softmax(trainer.model(x), 1), data.shape[2:])[0]
        np.testing.assert_allclose(probs[:, z], expected.numpy(), atol=1e-5)


def _write_four_channel_dataset(raw_root, num_cases=6, shape=(8, 32, 32)):
    """Phantoms whose class 1 shows in channels 0-2 only and class 2 in channel 3 only, each at a random
    place: a model learns class 2 only from channel 3."""
    rng = np.random.default_rng(3)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    with staged_dataset(raw_root, 990, "Synthetic") as folder:
        for i in range(num_cases):
            body = (grid[1] / 0.9) ** 2 + (grid[2] / 0.9) ** 2 <= 1
            label = np.zeros(shape, np.uint8)
            for value in (1, 2):
                cy, cx = rng.uniform(-0.45, 0.45, 2)
                label[((grid[1] - cy) / 0.3) ** 2 + ((grid[2] - cx) / 0.3) ** 2 + (grid[0] / 0.8) ** 2 <= 1] = value
            for c in range(4):
                image = 100.0 * body + rng.normal(0, 5, shape) * body
                shown = 2 if c == 3 else 1
                image[label == shown] += 80.0
                write_image(image.astype(np.float32), Geometry((0.8, 0.8, 4.0), (0.0, 0.0, 0.0),
                                                                 (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                            folder / "imagesTr" / f"synthetic_{i:03d}_{c:04d}.nii.gz")
            write_image(label, Geometry((0.8, 0.8, 4.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
                        folder / "labelsTr" / f"synthetic_{i:03d}.nii.gz")
        write_dataset_json(folder, {c: f"MR{c}" for c in range(4)}, {"background": 0, "core": 1, "rim": 2},
                           num_cases, ".nii.gz", name="Synthetic", description="four-channel test phantoms")
    return raw_root / "Dataset990_Synthetic"


@pytest.fixture
def four_channels(env):
    raw = _write_four_channel_dataset(env.raw)
    plan_and_preprocess(["-d", "990", "-np", "1"])
    folder = env.preprocessed / raw.name
    plan = read_json(folder / "samunet_plans.json")
    plan["backbones"]["tiny"]["input_size"] = TINY_INPUT
    write_json(plan, folder / "samunet_plans.json")
    return raw, folder


def _rim_dice(configuration):
    return read_json(configuration / "fold_0" / "validation" / "summary.json")["mean"]["2"]["Dice"]


@pytest.mark.parametrize("strategy,extra", [("decoder", ()), ("decoder", ("--no-cache",)), ("lora_both", ())])
def test_four_channels_train_and_predict_with_every_strategy_family(four_channels, env, tmp_path, strategy, extra):
    raw, folder = four_channels
    plan = read_json(folder / "samunet_plans.json")
    assert plan["encoder_input"]["context_slices"] == 0  # several channels: no context
    assert plan["encoder_input"]["projection"] == default_projection(4, 0)
    train(train_args(strategy, "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "4", *extra),
          show_progress=False)
    predict(["-i", str(raw / "imagesTr"), "-o", str(tmp_path / "preds"), "-npp", "1", "-nps", "1", "--amp", "off"])
    assert len(list((tmp_path / "preds").glob("*.nii.gz"))) == 6


def test_a_channel_carrying_the_only_signal_of_a_class_is_used(four_channels, env):
    _, folder = four_channels
    # the random `tiny` encoder must learn to see the blobs: it trains (strategy full)
    args = ("--epochs", "10", "--iters-per-epoch", "50", "--val-slices", "16", "--lr", "1e-3", "--no-augmentation")
    configuration = env.results / "Dataset990_Synthetic" / "full__tiny"
    train(train_args("full", *args), show_progress=False)
    seeing = _rim_dice(configuration)
    # the same run on a plan whose projection leaves channel 3 out
    shutil.rmtree(configuration)
    plan = read_json(folder / "samunet_plans.json")
    plan["encoder_input"]["projection"] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]
    write_json(plan, folder / "samunet_plans.json")
    train(train_args("full", *args), show_progress=False)
    blind = _rim_dice(configuration)
    assert seeing > blind + 0.3, (seeing, blind)


def test_separately_encoded_channels_are_each_a_grey_image():
    rng = np.random.default_rng(1)
    windows = [[-1.0, 2.0], [0.0, 4.0]]
    mapper = InputMapper(windows, EncoderInput.default(2, channel_encoding=SEPARATE), (0, 255), 16, torch.device("cpu"))
    assert mapper.views == 2 and EncoderInput.default(2, 1, SEPARATE).context_slices == 0
    planes = rng.normal(size=(2, 9, 11)).astype(np.float32)
    images = mapper.images([planes, planes[::-1].copy()])
    assert images.shape == (2, 2, 3, 16, 16)
    for c, (lo, hi) in enumerate(windows):
        x = ((torch.as_tensor(planes[c]) - lo) / (hi - lo)).clamp(0, 1)[None, None]
        expected = F.interpolate(x, size=(16, 16), mode="bilinear")[0, 0] * 255
        for k in range(3):
            torch.testing.assert_close(images[0, c, k], expected)
    fused = InputMapper(windows, EncoderInput.default(2, channel_encoding=SEPARATE), (0, 1), 16, torch.device("cpu"),
                        fused_slices=1)
    volume = rng.normal(size=(2, 4, 9, 11)).astype(np.float32)
    stacked = fused.stacked_images([fused.stack(volume, 0)])
    assert stacked.shape == (1, 6, 3, 16, 16)  # slices z-1, z, z+1, each 2 channels, slice-major
    torch.testing.assert_close(stacked[0, 4:], fused.images([volume[:, 1]])[0])


def test_a_plan_that_encodes_channels_separately_is_checked(four_channels):
    _, folder = four_channels
    plan = read_json(folder / "samunet_plans.json")
    assert plan["encoder_input"]["channel_encoding"] == CHANNEL_ENCODING
    separate = {**plan, "encoder_input": {**EncoderInput.default(4, channel_encoding=SEPARATE).fields(),
                                          "fused_slices": 0}}
    check_plan(separate, "plan")
    assert PlanView(separate).channel_views == 4 and PlanView(plan).channel_views == 1
    for bad, message in (({"channel_encoding": "mixed"}, "must be 'projected' or 'separate'"),
                         ({"channel_encoding": SEPARATE, "projection": [[0.25] * 4] * 3}, "'projection' null"),
                         ({"channel_encoding": SEPARATE, "context_slices": 1}, "'context_slices' must be 0")):
        with pytest.raises(SamunetError, match=message):
            check_plan({**separate, "encoder_input": {**separate["encoder_input"], **bad}}, "plan")


def use_separate_channels(folder, fused_slices=0):
    return edit_encoder_input(folder, **EncoderInput.default(4, channel_encoding=SEPARATE).fields(),
                              fused_slices=fused_slices)


def test_separate_channels_cached_and_uncached_agree_and_prediction_matches(four_channels, env):
    _, folder = four_channels
    plan = use_separate_channels(folder, fused_slices=1)
    cached, uncached, _ = input_source_trainers(folder, env)
    assert cached.inputs.cache.key["encoder_input"]["channel_encoding"] == SEPARATE  # a cache of its own
    cached.prepare()
    specs = cached.val_specs[:4]
    embeddings, targets = cached.plain_inputs(specs)
    encoded, _ = uncached.plain_inputs(specs)
    assert embeddings.shape[1] == 12  # 3 slices x 4 channels
    torch.testing.assert_close(embeddings, encoded, atol=2e-2, rtol=1e-2)
    model = cached.model
    assert model.metadata["channel_views"] == 4
    with torch.no_grad():
        model.fusion.mix.weight.normal_(0, 0.05)
    data = open_case(cached.data_folder, specs[0].case_id)[0][...]
    probs = SlicePredictor([model], plan, {}, use_tta=False, batch_slices=3).predict_preprocessed(data)
    z, last = specs[0].slice_index, data.shape[1] - 1
    images = cached.mapper.images([data[:, j] for j in (max(z - 1, 0), z, min(z + 1, last))])  # (3, 4, 3, S, S)
    with torch.no_grad():
        expected = torch.softmax(model(images.flatten(0, 1)[None]), 1)
    np.testing.assert_allclose(probs[:, z], resize_probabilities(expected, data.shape[2:])[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("strategy", ["decoder", "lora_both"])
def test_separate_channels_train_and_predict(four_channels, env, tmp_path, capsys, strategy):
    raw, folder = four_channels
    use_separate_channels(folder)
    train(train_args(strategy, "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "4"), show_progress=False)
    predict(["-i", str(raw / "imagesTr"), "-o", str(tmp_path / "preds"), "-npp", "1", "-nps", "1", "--amp", "off",
             "-s", strategy])
    assert len(list((tmp_path / "preds").glob("*.nii.gz"))) == 6
    # a plan edited after training no longer matches the model: one line, not a shape error
    plan_copy = env.results / raw.name / f"{strategy}__tiny" / "samunet_plans.json"
    plan = read_json(plan_copy)
    plan["encoder_input"] = EncoderInput.default(4).fields()
    write_json(plan, plan_copy)
    one_line_error(capsys, predict, ["-i", str(raw / "imagesTr"), "-o", str(tmp_path / "again"), "-npp", "1", "-nps",
                                     "1", "-s", strategy], "encode 4 image(s) per slice", "gives 1")
