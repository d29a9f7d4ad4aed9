"""samunet_pretrain on `tiny` (MAE) and a synthetic dataset: the masked loss falls, only the encoder changes,
strategies train and predict on top, the encoder file is verified wherever a model is rebuilt, --c
continues with the same losses, and labels are never read."""
import json

import pytest
import torch

from samunet.errors import SamunetError
from samunet.evaluation.find_best_configuration import main as find_best
from samunet.file_io import read_json
from samunet.inference.predict_cli import main as predict
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.backbones import build_backbone
from samunet.models.build import build_model
from samunet.models.export import main as export
from samunet.pretraining import pretrainer as pretrainer_module
from samunet.pretraining.masking import random_patch_masks
from samunet.pretraining.objectives import build_objective
from samunet.pretraining.objectives.visible_tokens import encode_visible
from samunet.pretraining.pretrain_cli import main as samunet_pretrain
from samunet.pretraining.pretrain_cli import build_parser, pretrain
from samunet.run_training import main as samunet_train
from samunet.run_training import train

from training_helpers import one_line_error, prepare_dataset, train_args

DATASET = "Dataset990_Synthetic"


def pretrain_args(*extra):
    return build_parser().parse_args(["990", "-b", "tiny", "--batch-size", "4", "--amp", "off", "-np", "1",
                                      "--iters-per-epoch", "8", *extra])


def pretrained_folder(env, name):
    return env.results / DATASET / "pretrained" / name


def test_visible_token_encoder_equals_the_dense_encoder_when_nothing_is_masked():
    encoder = build_backbone("tiny").image_encoder.eval()
    images = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        dense = encoder.patch_embed(images) + encoder.pos_embed
        for block in encoder.blocks:
            dense = block(dense)
        sparse, index = encode_visible(encoder, images, torch.ones(2, 256, dtype=torch.bool))
        # and with a quarter visible: each visible token sees only visible tokens of its window
        keep = ~random_patch_masks(2, 16, 0.75).flatten(1)
        part, part_index = encode_visible(encoder, images, keep)
    torch.testing.assert_close(sparse, dense.reshape(2, 256, -1), rtol=1e-4, atol=1e-5)
    assert part.shape == (2, 64, dense.shape[-1]) and bool((keep.gather(1, part_index)).all())


def test_objectives_reconstruct_images_of_the_input_size():
    for backbone, size in (("tiny", 64), ("litemedsam", 96)):
        objective = build_objective(backbone, build_backbone(backbone, size).image_encoder, size)
        images, masks = torch.randn(2, 3, size, size), random_patch_masks(2, objective.grid, 0.6)
        assert objective(images, masks).item() > 0
        out = objective.reconstruct(images, masks)
        cell = size // objective.grid
        visible = ~masks.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
        assert out.shape == images.shape  # visible pixels are the input's own
        torch.testing.assert_close(out[:, 0][visible], images[:, 0][visible], rtol=1e-5, atol=1e-5)


def test_pretraining_lowers_the_loss_changes_only_the_encoder_and_fine_tuning_uses_it(make_dataset, env, capsys):
    prepare_dataset(make_dataset, env)
    trainer = pretrain(pretrain_args("--epochs", "5", "--lr", "1e-3"), show_progress=False)
    log = trainer.log
    assert log["monitor_loss"][-1] < 0.9 * log["monitor_loss"][0]  # the fixed slices' masked loss falls
    assert log["train_loss"][-1] < log["train_loss"][0]
    folder = pretrained_folder(env, "mae_full")
    description = read_json(folder / "encoder.json")
    assert description["objective"] == "mae" and description["steps"] == 40 and description["data"]["cases"] == 5
    assert len(list((folder / "reconstructions").glob("*.png"))) == 4 and (folder / "progress.png").is_file()
    assert not (folder / "checkpoint_latest.pth").exists()

    base = build_model("tiny", "decoder", 2, input_size=64)
    start = build_model("tiny", "decoder", 2, input_size=64, pretrained_encoder=folder)
    saved = torch.load(folder / "encoder.pth")
    assert set(saved) == set(base.encoder.state_dict())
    changed = [k for k in saved if not torch.equal(saved[k], base.encoder.state_dict()[k])]
    unchanged = [k for k in saved if k.startswith("neck.")]  # MAE never reaches SAM's neck
    assert len(changed) > len(saved) // 2 and unchanged and not set(changed) & set(unchanged)
    for key, value in start.state_dict().items():  # the prompt encoder and mask decoder are the backbone's
        reference = saved[key[len("encoder."):]] if key.startswith("encoder.") else base.state_dict()[key]
        assert torch.equal(value, reference), key
    assert start.metadata["pretrained_encoder"] == {"name": "mae_full", "sha256": description["sha256"]}

    # a strategy on top: its own configuration folder, its own embedding cache, ranked by find_best
    train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "2",
                     "--pretrained", "mae_full"), show_progress=False)
    train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "2"), show_progress=False)
    assert len(list((env.preprocessed / DATASET / "embedding_cache").iterdir())) == 2
    configuration = env.results / DATASET / "decoder__tiny@mae_full"
    assert (configuration / "fold_0" / "checkpoint_final.pth").is_file()
    find_best(["990", "-f", "0", "--no-ensembling"])
    ranked = read_json(env.results / DATASET / "best_configuration.json")
    assert {"decoder__tiny", "decoder__tiny@mae_full"} <= {r["configuration"] for r in ranked["ranking"]}
    capsys.readouterr()

    images = env.raw / DATASET / "imagesTr"
    predict(["-i", str(images), "-o", str(env.results / "p1"), "-d", "990", "-s", "decoder", "-b", "tiny@mae_full"])
    assert len(list((env.results / "p1").glob("*.nii.gz"))) == 5

    checkpoint = configuration / "fold_0" / "checkpoint_final.pth"
    encoder_file = folder / "encoder.pth"
    original = encoder_file.read_bytes()
    state = torch.load(encoder_file)
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, encoder_file)
    for command, args in ((predict, ["-i", str(images), "-o", str(env.results / "p2"), "-d", "990", "-s", "decoder",
                                     "-b", "tiny@mae_full"]),
                          (export, [str(checkpoint), "-o", str(env.results / "exported.pth")])):
        with pytest.raises(SystemExit):
            command(args)
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{encoder_file}: changed since it was made" in err
    encoder_file.unlink()
    with pytest.raises(SystemExit):
        predict(["-i", str(images), "-o", str(env.results / "p3"), "-d", "990", "-s", "decoder", "-b", "tiny@mae_full"])
    assert capsys.readouterr().err.strip().endswith(f"{encoder_file}: pretrained encoder file missing")
    encoder_file.write_bytes(original)
    export([str(checkpoint), "-o", str(env.results / "exported.pth")])
    exported = torch.load(env.results / "exported.pth")
    assert torch.equal(exported[f"image_encoder.{first}"], saved[first])  # the pretrained weights, exported


def test_lora_and_adapter_pretraining(make_dataset, env):
    """LoRA is merged into the encoder's own weights (only the attention projections change); adapters are
    kept and rebuilt, and an adapter strategy trains them on from their pretrained values."""
    prepare_dataset(make_dataset, env)
    pretrain(pretrain_args("--epochs", "1", "--tune", "lora", "--lr", "1e-2"), show_progress=False)
    saved = torch.load(pretrained_folder(env, "mae_lora") / "encoder.pth")
    base = build_backbone("tiny", 64).image_encoder.state_dict()
    assert set(saved) == set(base)
    assert {k for k in saved if not torch.equal(saved[k], base[k])} == {k for k in base if k.endswith("qkv.weight")}

    pretrain(pretrain_args("--epochs", "1", "--tune", "adapter", "--lr", "1e-2"), show_progress=False)
    folder = pretrained_folder(env, "mae_adapter")
    trainer = train(train_args("adapter_encoder", "--epochs", "1", "--iters-per-epoch", "2", "--val-slices", "2",
                               "--pretrained", "mae_adapter"), show_progress=False)
    adapters = {k: v for k, v in torch.load(folder / "encoder.pth").items() if ".adapter." in k}
    assert adapters and all(v.requires_grad for k, v in trainer.model.encoder.named_parameters() if k in adapters)
    assert any(not torch.equal(trainer.model.encoder.state_dict()[k], v) for k, v in adapters.items())
    assert sum(".adapter." in k for k in trainer.model.encoder.state_dict()) == len(adapters)  # none added twice


def test_continue_after_an_interruption_gives_the_same_losses(make_dataset, env, monkeypatch, capsys):
    prepare_dataset(make_dataset, env)
    whole = pretrain(pretrain_args("--epochs", "4", "--name", "whole"), show_progress=False)
    original = pretrainer_module.Pretrainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    with monkeypatch.context() as m:
        m.setattr(pretrainer_module.Pretrainer, "train_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pretrain(pretrain_args("--epochs", "4", "--name", "cut"), show_progress=False)
    folder = pretrained_folder(env, "cut")
    assert (folder / "checkpoint_latest.pth").is_file() and not (folder / "encoder.pth").exists()
    with pytest.raises(SystemExit):
        samunet_pretrain(["990", "-b", "tiny", "--name", "cut", "--epochs", "4"])
    assert "holds a started pretraining; pass --c" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # other settings cannot continue it
        samunet_pretrain(["990", "-b", "tiny", "--name", "cut", "--epochs", "4", "--batch-size", "2", "--c",
                          "--iters-per-epoch", "8", "--amp", "off"])
    assert "made with other settings (batch_size 4 -> 2)" in capsys.readouterr().err
    resumed = pretrain(pretrain_args("--epochs", "4", "--name", "cut", "--c"), show_progress=False)
    assert resumed.log["train_loss"] == whole.log["train_loss"]
    assert resumed.log["monitor_loss"] == whole.log["monitor_loss"]
    assert torch.equal(torch.load(folder / "encoder.pth")["pos_embed"],
                       torch.load(pretrained_folder(env, "whole") / "encoder.pth")["pos_embed"])
    samunet_pretrain(["990", "-b", "tiny", "--name", "cut", "--c"])
    assert "pretraining already finished" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        samunet_pretrain(["990", "-b", "tiny", "--name", "cut"])
    assert "holds a finished pretraining" in capsys.readouterr().err


def test_labels_are_never_read_and_every_image_source_is_used(make_dataset, env, monkeypatch, capsys, tmp_path):
    prepare_dataset(make_dataset, env, num_cases=4)
    raw = env.raw / DATASET
    for label in (raw / "labelsTr").iterdir():
        label.write_bytes(b"not an image")  # reading one would fail
    (raw / "imagesTs").mkdir()
    (raw / "imagesTr" / "synthetic_000_0000.nii.gz").rename(raw / "imagesTs" / "synthetic_000_0000.nii.gz")
    extra = tmp_path / "unlabelled"
    extra.mkdir()
    for name in ("synthetic_001", "synthetic_002"):
        (extra / f"{name}_0000.nii.gz").write_bytes((raw / "imagesTr" / f"{name}_0000.nii.gz").read_bytes())
    opened = []
    import samunet.dataset_integrity as integrity

    real_read = integrity.read_image
    monkeypatch.setattr(integrity, "read_image", lambda path: opened.append(str(path)) or real_read(path))
    trainer = pretrain(pretrain_args("--epochs", "1", "--extra-images", str(extra)), show_progress=False)
    assert len(opened) == 6 and not [p for p in opened if "/labelsTr/" in p]
    assert trainer.images.counts == {"imagesTr": 3, "imagesTs": 1, str(extra): 2}
    ids = trainer.images.case_ids
    assert len(ids) == 6 and sum(i.startswith("Ts_") for i in ids) == 1 and sum(i.startswith("x") for i in ids) == 2
    assert read_json(pretrained_folder(env, "mae_full") / "encoder.json")["data"]["cases"] == 6

    (extra / "synthetic_001_0001.nii.gz").write_bytes(b"")  # a second channel the plan does not have
    with pytest.raises(SystemExit):
        samunet_pretrain(["990", "-b", "tiny", "--name", "other", "--extra-images", str(extra)])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{extra}: holds channel file(s) _0001, but the plan has 1 channel(s)" in err
    with pytest.raises(SystemExit):
        samunet_pretrain(["990", "-b", "tiny", "--name", "../escape"])
    assert "use letters, digits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        samunet_pretrain(["990", "-b", "tiny", "--mask-ratio", "1"])
    assert "between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "0", "-b", "tiny", "--pretrained", "absent"])
    assert "absent/encoder.json: no pretrained encoder here" in capsys.readouterr().err


def test_a_pretrained_encoder_refuses_other_base_weights_and_sizes(make_dataset, env):
    prepare_dataset(make_dataset, env)
    pretrain(pretrain_args("--epochs", "1"), show_progress=False)
    folder = pretrained_folder(env, "mae_full")
    with pytest.raises(SamunetError, match="pretrained for input_size 64, this model has 128"):
        build_model("tiny", "decoder", 2, input_size=128, pretrained_encoder=folder)
    description = json.loads((folder / "encoder.json").read_text())
    (folder / "encoder.json").write_text(json.dumps(dict(description, base_weights="random-seed-1")))
    with pytest.raises(SamunetError, match="pretrained for base_weights 'random-seed-1'"):
        build_model("tiny", "decoder", 2, input_size=64, pretrained_encoder=folder)


def test_a_pretrained_encoder_is_fed_as_it_was_pretrained(make_dataset, env, capsys):
    """encoder.json records the input normalisation pretraining used; fine-tuning with another one is refused."""
    prepare_dataset(make_dataset, env)
    pretrain(pretrain_args("--epochs", "1", "--input-normalization", "sam", "--name", "sam_fed"), show_progress=False)
    folder = pretrained_folder(env, "sam_fed")
    sam = NORMALIZATIONS["sam"].fields()
    assert json.loads((folder / "encoder.json").read_text())["input_normalization"] == sam
    with pytest.raises(SamunetError, match="pretrained on inputs normalised as .*255.*, this model is fed .*"):
        build_model("tiny", "decoder", 2, input_size=64, pretrained_encoder=folder)  # tiny's own: unit
    model = build_model("tiny", "decoder", 2, input_size=64, pretrained_encoder=folder, normalization=sam)
    assert model.metadata["input_range"] == [0.0, 255.0]
    one_line_error(capsys, samunet_train, ["990", "decoder", "0", "-b", "tiny", "--pretrained", "sam_fed", "-np", "0"],
                   "encoder.json: pretrained on inputs normalised as")
