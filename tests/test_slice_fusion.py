"""3D context in the head: neighbouring slices' embeddings fused with a slice's (plan `fused_slices`)."""
import numpy as np
import pytest
import torch

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.inference.predict_cli import main as predict
from samunet.inference.predictor import SlicePredictor, resize_probabilities
from samunet.inference.prompted_predictor import PromptedPredictor
from samunet.models.build import build_model
from samunet.models.checkpoint import load_model
from samunet.models.export import export_state
from samunet.models.slice_fusion import SliceFusion, gather_neighbours, neighbour_indices
from samunet.planners.experiment_planner import FUSED_SLICES, fused_slices_for
from samunet.planners.plan_file import PlanView, check_plan
from samunet.preprocessing.storage import open_case
from samunet.run_training import train

from training_helpers import TINY_INPUT, edit_encoder_input, input_source_trainers, prepare_dataset, train_args


def _fingerprint(shapes, spacings, channels=1):
    return {"shapes_after_crop": shapes, "spacings": spacings, "channel_names": {str(c): "MR" for c in range(channels)}}


def test_neighbours_replicate_the_volume_edges():
    assert neighbour_indices(0, 1, 5) == [0, 0, 1]
    assert neighbour_indices(4, 2, 5) == [2, 3, 4, 4, 4]
    assert neighbour_indices(2, 0, 5) == [2]
    table = {s: torch.full((2, 1, 1), float(s)) for s in range(4)}
    stacked = gather_neighbours(table, [0, 3], 1, 4)
    assert stacked.shape == (2, 3, 2, 1, 1)
    assert stacked[:, :, 0, 0, 0].tolist() == [[0, 0, 1], [2, 3, 3]]
    assert gather_neighbours(table, [1, 2], 0, 4).shape == (2, 2, 1, 1)


def test_an_untrained_fusion_is_the_slice_model():
    fusion = SliceFusion(8, 1)
    embeddings = torch.randn(2, 3, 8, 4, 4)
    torch.testing.assert_close(fusion(embeddings), embeddings[:, 1])
    with torch.no_grad():
        fusion.mix.weight.normal_()
    assert not torch.allclose(fusion(embeddings), embeddings[:, 1])  # once trained, neighbours count
    model = build_model("tiny", "lora_both", 2, input_size=TINY_INPUT, weights=False, fused_slices=1)
    assert model.metadata["fused_slices"] == 1
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"fusion.mix.weight", "fusion.mix.bias"} <= trainable  # trained by every strategy
    state, loads_into = export_state(model)
    assert "fusion.mix.weight" in state and "fusion." in loads_into  # not renamed into SAM's keys (lost there)


def test_planner_fuses_on_3d_data_only_and_the_plan_checks_it(make_dataset, env):
    volumes = _fingerprint([[20, 64, 64], [24, 60, 64]], [[3.0, 1.0, 1.0]] * 2)
    assert fused_slices_for(volumes, 0) == FUSED_SLICES
    assert fused_slices_for(volumes, 0, wanted=2) == 2
    assert fused_slices_for(_fingerprint([[20, 64, 64]] * 2, [[3.0, 1.0, 1.0]] * 2, channels=4), 0, 1) == 1
    assert fused_slices_for(_fingerprint([[1, 64, 64]] * 2, [[1.0, 1.0, 1.0]] * 2), 0, 1) == 0
    assert fused_slices_for(_fingerprint([[3, 64, 64]] * 2, [[999.0, 1.0, 1.0]] * 2), 0, 1) == 0

    folder = prepare_dataset(make_dataset, env, num_cases=3)
    plan = read_json(folder / "samunet_plans.json")
    assert plan["encoder_input"]["fused_slices"] == FUSED_SLICES
    for bad in (-1, 1.5, "1"):
        with pytest.raises(SamunetError, match="plan: 'encoder_input.fused_slices' must be an integer >= 0"):
            check_plan({**plan, "encoder_input": {**plan["encoder_input"], "fused_slices": bad}}, "plan")
    del plan["encoder_input"]["fused_slices"]  # a plan from before fusion: none
    assert PlanView(plan).fused_slices == 0


def test_every_input_source_gives_the_head_the_neighbours_embeddings(make_dataset, env):
    folder = prepare_dataset(make_dataset, env, num_cases=4)
    edit_encoder_input(folder, fused_slices=1)
    cached, uncached, whole = input_source_trainers(folder, env)
    cached.prepare()
    data = open_case(cached.data_folder, cached.val_specs[0].case_id)[0][...]
    last = data.shape[1] - 1
    edge = [s for s in cached.val_specs if s.case_id == cached.val_specs[0].case_id and s.slice_index in (0, last)]
    specs = (edge + cached.val_specs)[:4]
    embeddings, targets = cached.plain_inputs(specs)
    encoded, same_targets = uncached.plain_inputs(specs)
    assert embeddings.shape[:2] == (4, 3) and torch.equal(targets, same_targets)
    torch.testing.assert_close(embeddings, encoded, atol=2e-2, rtol=1e-2)  # the cache holds fp16
    # by hand: slices z-1, z, z+1 (edges replicated) of the volume, each mapped and encoded alone
    images, _ = whole.plain_inputs(specs[:1])
    z = specs[0].slice_index
    expected = torch.stack([cached.mapper.images([data[:, j]])[0] for j in (max(z - 1, 0), z, min(z + 1, last))])
    torch.testing.assert_close(images[0], expected)
    with torch.no_grad():
        torch.testing.assert_close(uncached.model.encode(images), encoded[:1], atol=1e-4, rtol=1e-4)


def _trained_fusion(make_dataset, env, strategy="decoder", *extra):
    folder = prepare_dataset(make_dataset, env, num_cases=4)
    edit_encoder_input(folder, fused_slices=1)
    trainer = train(train_args(strategy, "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "2", *extra),
                    show_progress=False)
    with torch.no_grad():  # a fusion that visibly mixes neighbours (two iterations move it little)
        trainer.model.fusion.mix.weight.normal_(0, 0.05)
    return folder, trainer


def test_prediction_fuses_the_neighbours_training_fused(make_dataset, env, tmp_path):
    folder, trainer = _trained_fusion(make_dataset, env)
    plan = read_json(folder / "samunet_plans.json")
    data = open_case(trainer.data_folder, trainer.val_cases[0])[0][...]
    # chunks of 2 slices: neighbours come from the chunk before and after
    probs = SlicePredictor([trainer.model], plan, {}, use_tta=False, batch_slices=2).predict_preprocessed(data)
    # a mirrored pass (columns) in chunks of 3: its neighbours are mirrored too
    mirrored = SlicePredictor([trainer.model], plan, {}, use_tta=False, batch_slices=3)
    last = data.shape[1] - 1
    flipped = mirrored._probabilities(data, list(range(last + 1)), [(-1,)])
    for z in (0, 1, last // 2, last):
        images = trainer.mapper.images([data[:, j] for j in (max(z - 1, 0), z, min(z + 1, last))])[None]
        with torch.no_grad():
            expected = torch.softmax(trainer.model(images), 1)
            expected_flipped = torch.softmax(trainer.model(images.flip(-1)), 1).flip(-1)
        for got, want in ((probs, expected), (flipped, expected_flipped)):
            np.testing.assert_allclose(got[:, z], resize_probabilities(want, data.shape[2:])[0].numpy(), atol=1e-5)


def test_a_fused_model_trains_resumes_and_predicts_from_its_checkpoint(make_dataset, env, tmp_path):
    folder = prepare_dataset(make_dataset, env, num_cases=4)
    edit_encoder_input(folder, fused_slices=1)
    train(train_args("lora_both", "--epochs", "2", "--iters-per-epoch", "2", "--val-slices", "2"), show_progress=False)
    configuration = env.results / "Dataset990_Synthetic" / "lora_both__tiny"
    model, payload = load_model(configuration / "fold_0" / "checkpoint_final.pth")
    assert model.fusion is not None and payload["metadata"]["fused_slices"] == 1
    assert model.fusion.mix.weight.abs().sum() > 0  # trained and saved
    train(train_args("lora_both", "--epochs", "3", "--iters-per-epoch", "2", "--val-slices", "2", "--c"),
          show_progress=False)  # resumes at epoch 2
    predict(["-i", str(env.raw / "Dataset990_Synthetic" / "imagesTr"), "-o", str(tmp_path / "preds"), "-npp", "1",
             "-nps", "1", "--amp", "off", "-s", "lora_both"])
    assert len(list((tmp_path / "preds").glob("*.nii.gz"))) == 4


def test_prompted_prediction_fuses_neighbours_too(make_dataset, env):
    folder, trainer = _trained_fusion(make_dataset, env, "decoder", "--prompts", "box")
    plan = read_json(folder / "samunet_plans.json")
    data, seg, _ = open_case(trainer.data_folder, trainer.val_cases[0])
    data, seg = data[...], seg[...]
    predictor = PromptedPredictor([trainer.model], plan, {}, use_tta=False)
    prompts = predictor.prompts_from_mask(seg)
    assert prompts
    probs = predictor.predict_with_prompts(data, prompts, volume_key="case")
    assert probs.shape == (trainer.model.num_outputs, *data.shape[1:])
    z = prompts[0].slice_index
    embeddings = predictor._encoded(data, [z], "case")[0]
    assert embeddings.shape[1] == 3  # slices z-1, z, z+1
    last = data.shape[1] - 1
    images = trainer.mapper.images([data[:, j] for j in (max(z - 1, 0), z, min(z + 1, last))])
    with torch.no_grad():
        torch.testing.assert_close(embeddings[0], trainer.model.encode(images), atol=1e-4, rtol=1e-4)
