import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samunet.errors import SamunetError
from samunet.file_io import read_json, write_json
from samunet.inference.predictor import SlicePredictor
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.strategies import STRATEGIES
from samunet.run_training import main as samunet_train
from samunet.run_training import final_validation, train
from samunet.trainers.distributed import DistInfo
from samunet.trainers.encoder_inputs import CachedInputs, EncodedInputs, ImageInputs, encoder_inputs_for
from samunet.trainers.loss import ce_dice_loss
from samunet.trainers.lr_schedule import warmup_poly
from samunet.trainers.trainer import SamTrainer, TrainConfig

from training_helpers import prepare_dataset, train_args


@pytest.fixture
def dataset(make_dataset, env):
    return prepare_dataset(make_dataset, env)


def fixed_batch_loss(trainer, specs):
    inputs, targets = trainer.plain_inputs(specs)
    with torch.no_grad():
        return ce_dice_loss(trainer.trained_module()(inputs), targets).item()


def fold_folder(env, strategy, fold="0"):
    return env.results / "Dataset990_Synthetic" / f"{strategy}__tiny" / f"fold_{fold}"


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_trains_and_writes_checkpoints(dataset, env, strategy):
    config = TrainConfig(strategy=strategy, backbone="tiny", fold="0", epochs=2, iters_per_epoch=8, batch_size=4,
                         lr=2e-3, augment=False, val_slices=8)
    out = fold_folder(env, strategy)
    trainer = SamTrainer(config, dataset, out, torch.device("cpu"), DistInfo(), show_progress=False)
    assert isinstance(trainer.inputs, CachedInputs) == STRATEGIES[strategy].encoder_frozen
    specs = trainer.val_specs[:4]
    trainer.prepare()
    before = fixed_batch_loss(trainer, specs)
    trainer.run()
    assert fixed_batch_loss(trainer, specs) < before
    assert (out / "checkpoint_final.pth").is_file() and (out / "checkpoint_best.pth").is_file()
    assert not (out / "checkpoint_latest.pth").exists()
    assert (out / "progress.png").stat().st_size > 0
    assert "epoch 1: train loss" in (out / "training_log.txt").read_text()
    final_validation(trainer)  # what samunet_train runs after training
    summary = read_json(out / "validation" / "summary.json")
    assert set(summary["mean"]) == {"1", "2"} and summary["class_names"] == {"1": "core", "2": "rim"}
    assert len(summary["metric_per_case"]) == len(trainer.val_cases)
    assert sorted(p.name for p in (out / "validation").glob("*.nii.gz")) == sorted(
        f"{c}.nii.gz" for c in trainer.val_cases)
    meta = read_json(out / "checkpoint_final.json")
    assert meta["strategy"] == strategy and meta["trainable_parameters"] == sum(
        p.numel() for p in trainer.model.parameters() if p.requires_grad)


def test_default_loss_and_sampling_do_not_collapse_to_background(dataset, env):
    # The random `tiny` backbone learns slower than pretrained weights, hence a higher learning rate here;
    # the default one is checked on LiteMedSAM in test_training_real.py.
    trainer = train(train_args("decoder", "--epochs", "4", "--iters-per-epoch", "40", "--val-slices", "20",
                               "--lr", "2e-3"), show_progress=False)
    assert trainer.log["pseudo_dice"][-1] > 0.2
    specs = [s for s in trainer.val_specs][:8]
    inputs, _ = trainer.plain_inputs(specs)
    with torch.no_grad():
        predicted = trainer.trained_module()(inputs).argmax(1)
    assert (predicted > 0).float().mean() > 0.01


def test_resume_continues_exactly(dataset, env, monkeypatch):
    common = ("--epochs", "3", "--iters-per-epoch", "5", "--val-slices", "6")
    uninterrupted = train(train_args("lora_both", *common), show_progress=False).log["train_loss"]

    monkeypatch.setenv("SAMUNET_RESULTS", str(env.results / "second_run"))
    original = SamTrainer.save_epoch_checkpoints

    def save_then_die(self, epoch, *args):
        original(self, epoch, *args)
        if epoch == 0:
            raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(SamTrainer, "save_epoch_checkpoints", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(train_args("lora_both", *common), show_progress=False)
    out = env.results / "second_run" / "Dataset990_Synthetic" / "lora_both__tiny" / "fold_0"
    assert (out / "checkpoint_latest.pth").is_file() and not (out / "checkpoint_final.pth").exists()
    with pytest.raises(SamunetError, match="pass --c to continue"):
        train(train_args("lora_both", *common), show_progress=False)
    resumed = train(train_args("lora_both", *common, "--c"), show_progress=False)
    assert "continuing from" in (out / "training_log.txt").read_text()
    # the same losses after the restart (up to float summation order in BLAS; a lost optimizer or scheduler
    # state, or other batches, would differ by orders of magnitude more)
    assert resumed.log["train_loss"] == pytest.approx(uninterrupted, rel=1e-5, abs=0)
    assert train(train_args("lora_both", *common, "--c"), show_progress=False) is None  # already finished


def budget_run(env, monkeypatch, step_seconds, epoch_end_seconds=0.0):
    """`lora_both` on `tiny` for at most 20 epochs of 2 iterations under a 1-minute budget, on a clock that
    only training steps and epoch ends advance: step i (from 0) takes step_seconds(i), each epoch's
    evaluation and checkpoints epoch_end_seconds. Returns (trainer, its log, the clock at the end)."""
    clock, steps = [0.0], [0]
    monkeypatch.setattr("samunet.trainers.epoch_loop.time", SimpleNamespace(perf_counter=lambda: clock[0],
                                                                         strftime=time.strftime))
    original_step, original_end = SamTrainer.train_step, SamTrainer.end_epoch

    def timed_step(self, inputs, targets):
        clock[0] += step_seconds(steps[0])
        steps[0] += 1
        return original_step(self, inputs, targets)

    def timed_end(self, epoch, losses, seconds):
        clock[0] += epoch_end_seconds
        return original_end(self, epoch, losses, seconds)

    monkeypatch.setattr(SamTrainer, "train_step", timed_step)
    monkeypatch.setattr(SamTrainer, "end_epoch", timed_end)
    trainer = train(train_args("lora_both", "--epochs", "20", "--iters-per-epoch", "2", "--val-slices", "2",
                               "--time-budget", "1"), show_progress=False)
    return trainer, (fold_folder(env, "lora_both") / "training_log.txt").read_text(), clock[0]


def test_time_budget_stops_with_the_lr_decay_completed(dataset, env, monkeypatch):
    trainer, log, _ = budget_run(env, monkeypatch, lambda step: 5.0)  # 10 s an epoch of 2
    assert len(trainer.log["train_loss"]) == 6  # 6 x 10 s fit into 1 minute
    assert trainer.log["lr"][-1] == 0.0 and trainer.log["lr"][0] > 0  # the schedule was fitted to 6 epochs
    assert (fold_folder(env, "lora_both") / "checkpoint_final.pth").is_file()
    assert "time budget: 12 iterations fit (6 epochs)" in log
    assert "time budget of 1 min: stopping after epoch 5" in log
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "0", "-b", "tiny", "--time-budget", "0"])


def test_time_budget_refits_the_lr_decay_when_epochs_slow_down(dataset, env, monkeypatch):
    """Epochs of 10 s, then of 15 s from the third on: the 6 epochs fitted after the first no longer fit,
    and the decay is re-fitted, without a jump, to end with the last iteration that does: part-way through
    a fifth epoch, which is still evaluated (its evaluation was budgeted)."""
    trainer, log, clock = budget_run(env, monkeypatch, lambda step: 5.0 if step < 4 else 7.5)
    lr = trainer.log["lr"]
    assert "time budget: 12 iterations fit (6 epochs)" in log
    assert "time budget: 9 iterations fit (4 epochs and 1 iteration)" in log
    assert len(lr) == 5 and "stopping after epoch 4" in log  # 10 + 10 + 15 + 15 + 7.5 s
    assert clock == 57.5 and "not evaluated" not in log
    assert lr[-1] == 0.0 and lr[0] > lr[1] > lr[2] > lr[3] > lr[4]  # the LR reaches 0 where the run stops


def test_time_budget_refits_the_lr_decay_when_epochs_speed_up(dataset, env, monkeypatch):
    """A slow first epoch (15 s), then epochs of 5 s: the 4 epochs fitted after the first grow to the 10
    that fit, once the slow epoch is out of the last three."""
    trainer, log, _ = budget_run(env, monkeypatch, lambda step: 7.5 if step < 2 else 2.5)
    assert all(f"time budget: {n} iterations fit" in log for n in (8, 9, 10, 20))
    assert len(trainer.log["lr"]) == 10 and trainer.log["lr"][-1] == 0.0 and "stopping after epoch 9" in log


def test_time_budget_keeps_time_for_each_epochs_evaluation(dataset, env, monkeypatch):
    """Steps of 4 s and 5 s of evaluation and checkpoints per epoch (13 s an epoch): after the first epoch
    47 s are left, which hold 11 more steps but only 3 more epochs with their ends; a fourth epoch's end
    would not fit after even one of its steps, so the run ends with the fourth whole epoch, inside the budget."""
    trainer, log, clock = budget_run(env, monkeypatch, lambda step: 4.0, epoch_end_seconds=5.0)
    assert "time budget: 8 iterations fit (4 epochs)" in log
    assert len(trainer.log["lr"]) == 4 and trainer.log["lr"][-1] == 0.0 and clock == 52.0


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_cached_and_uncached_decoder_give_the_same_first_step_loss(dataset, env, amp):
    config = TrainConfig(strategy="decoder", backbone="tiny", fold="0", epochs=1, iters_per_epoch=1, batch_size=4,
                         augment=False, amp=amp)
    assert encoder_inputs_for("decoder", use_cache=False) is EncodedInputs
    args = (torch.device("cpu"), DistInfo())
    cached = SamTrainer(config, dataset, env.results / "a", *args, show_progress=False)
    uncached = SamTrainer(replace(config, use_cache=False), dataset, env.results / "b", *args, show_progress=False)
    whole_model = SamTrainer(config, dataset, env.results / "c", *args, show_progress=False, input_source=ImageInputs)
    assert isinstance(cached.inputs, CachedInputs) and isinstance(uncached.inputs, EncodedInputs)
    cached.prepare()
    assert cached.inputs.frozen is None  # the encoder copy is dropped once the cache is filled
    batches = cached.sampler.epoch_batches(0, 1, 4)
    assert batches == uncached.sampler.epoch_batches(0, 1, 4)
    losses = []
    for trainer in (cached, uncached, whole_model):
        inputs, targets = next(iter(trainer.epoch_inputs(batches)))
        with trainer.autocast():
            logits = trainer.network(inputs)
        losses.append(ce_dice_loss(logits, targets).item())
    # Cached and uncached see the same inference encoder (the cache stores its output in fp16), which
    # computes what the whole model's frozen encoder does: exactly with amp off, up to bf16 rounding with
    # bf16 (its own bf16 weights and folded norms against fp32 weights under autocast).
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    assert losses[1] == pytest.approx(losses[2], rel=1e-3)
    images, _ = whole_model.plain_inputs(batches[0])
    with torch.no_grad(), whole_model.autocast():
        reference = whole_model.model.encode(images).float()
    error = ((uncached.inputs.encode(images) - reference).norm() / reference.norm()).item()
    assert error < (1e-5 if amp == "off" else 2e-2)
    inputs, targets = next(iter(uncached.epoch_inputs(batches)))
    encoder_before = [p.clone() for p in uncached.model.encoder.parameters()]
    head_before = [p.clone() for p in uncached.trained_parameters]
    uncached.train_step(inputs, targets)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, uncached.model.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, uncached.trained_parameters))
    cache = cached.inputs.cache
    cache_files = sorted(p.name for p in cache.folder.glob("*.npy"))
    assert len(cache_files) == 5  # every case of the fold, computed once
    mtimes = [p.stat().st_mtime_ns for p in cache.folder.glob("*.npy")]
    assert cache.fill(cached.train_cases + cached.val_cases, cached.model, cached.mapper, cached.autocast) == 0
    assert [p.stat().st_mtime_ns for p in cache.folder.glob("*.npy")] == mtimes


def test_cache_is_invalidated_when_the_plan_changes(dataset, env):
    config = TrainConfig(strategy="linear_head", backbone="tiny", fold="0", epochs=1, iters_per_epoch=1, batch_size=4)
    first = SamTrainer(config, dataset, env.results / "a", torch.device("cpu"), DistInfo(), show_progress=False)
    plan = read_json(dataset / "samunet_plans.json")
    plan["intensity_mapping"]["window_per_channel"] = [[-1.0, 1.0]]
    write_json(plan, dataset / "samunet_plans.json")
    second = SamTrainer(config, dataset, env.results / "b", torch.device("cpu"), DistInfo(), show_progress=False)
    assert first.inputs.cache.folder != second.inputs.cache.folder
    other_strategy = SamTrainer(TrainConfig(strategy="decoder", backbone="tiny", fold="1"), dataset,
                                            env.results / "c", torch.device("cpu"), DistInfo(), show_progress=False)
    assert other_strategy.inputs.cache.folder == second.inputs.cache.folder  # shared by strategies and folds


def test_an_edited_plan_normalisation_reaches_training_cache_and_prediction(dataset, env):
    """The plan's backbone entry says how encoder inputs are normalised; the trained model records what it
    was fed, and the embedding cache and prediction read that record: after an edit all three agree."""
    config = TrainConfig(strategy="decoder", backbone="tiny", fold="0", epochs=1, iters_per_epoch=1, batch_size=4)
    before = SamTrainer(config, dataset, env.results / "a", torch.device("cpu"), DistInfo(), show_progress=False)
    assert before.model.metadata["input_range"] == [0.0, 1.0]  # tiny's own: unit
    sam = NORMALIZATIONS["sam"]
    plan = read_json(dataset / "samunet_plans.json")
    plan["backbones"]["tiny"].update(sam.fields())
    write_json(plan, dataset / "samunet_plans.json")
    trainer = train(train_args("decoder", "--epochs", "1", "--iters-per-epoch", "1"), show_progress=False)
    assert (trainer.mapper.range_lo, trainer.mapper.range_width) == (0.0, 255.0)
    assert {k: trainer.model.metadata[k] for k in sam.fields()} == sam.fields()
    assert trainer.inputs.cache.key["input_normalization"] == list(sam.fields().values())
    assert trainer.inputs.cache.folder != before.inputs.cache.folder  # embeddings of other inputs are other embeddings
    predictor = SlicePredictor.from_model_folder(fold_folder(env, "decoder").parent, ["0"])
    assert (predictor.mapper.range_lo, predictor.mapper.range_width) == (0.0, 255.0)
    assert torch.equal(predictor.models[0].pixel_mean.flatten(), torch.tensor(sam.pixel_mean))
    # --input-normalization overrides the plan for one run, and that run's record says so
    override = train(train_args("linear_head", "--epochs", "1", "--iters-per-epoch", "1", "--input-normalization",
                                "unit"), show_progress=False)
    assert override.model.metadata["input_range"] == [0.0, 1.0] and override.mapper.range_width == 1.0
    assert SlicePredictor.from_model_folder(fold_folder(env, "linear_head").parent, ["0"]).mapper.range_width == 1.0


def test_few_shot_and_fold_all(dataset, env):
    trainer = train(train_args("cnn_head", "--epochs", "1", "--iters-per-epoch", "2", "--num-train-cases", "1"),
                    show_progress=False)
    splits = read_json(dataset / "splits_final.json")
    assert trainer.train_cases == splits[0]["train"][:1]
    assert set(trainer.sampler.case_ids) == set(splits[0]["train"][:1])
    everything = train(train_args("cnn_head", "--epochs", "1", "--iters-per-epoch", "1", fold="all"), show_progress=False)
    assert len(everything.train_cases) == 5 and everything.val_cases == everything.train_cases
    configuration = env.results / "Dataset990_Synthetic" / "cnn_head__tiny"
    assert (configuration / "samunet_plans.json").is_file() and (configuration / "dataset.json").is_file()


def test_val_only_and_bad_arguments(dataset, env, capsys):
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "0", "-b", "tiny", "--val"])
    assert "not trained yet" in capsys.readouterr().err
    train(train_args("linear_head", "--epochs", "1", "--iters-per-epoch", "2"), show_progress=False)
    summary_path = fold_folder(env, "linear_head") / "validation" / "summary.json"
    summary_path.unlink()
    train(train_args("linear_head", "--val"), show_progress=False)
    assert summary_path.is_file()
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "7", "-b", "tiny"])
    assert "fold 7 does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        samunet_train(["990", "decoder", "0", "-b", "tiny", "--num-train-cases", "99"])
    assert "--num-train-cases must be" in capsys.readouterr().err


def test_worker_processes_give_the_same_batches_as_the_main_process(dataset, env):
    """With -np > 0 on CPU the workers also resize (MappedCollate): the batches must not change."""
    batches_by_workers = []
    for workers in (0, 2):
        config = TrainConfig(strategy="lora_both", backbone="tiny", fold="0", epochs=1, iters_per_epoch=2,
                             batch_size=4, num_workers=workers)
        trainer = SamTrainer(config, dataset, env.results / f"w{workers}", torch.device("cpu"), DistInfo(),
                             show_progress=False)
        batches_by_workers.append(list(trainer.epoch_inputs(trainer.sampler.epoch_batches(0, 2, 4))))
    for (images, labels), (images_w, labels_w) in zip(*batches_by_workers):
        assert images.shape == (4, 3, 64, 64) and labels.dtype == torch.long
        torch.testing.assert_close(images_w, images)
        assert torch.equal(labels_w, labels)


def test_augmentation_is_reproducible_per_slice():
    from samunet.trainers.augmentation import augment_slice

    image = np.random.RandomState(0).rand(2, 30, 28).astype(np.float32)
    label = (image[0] > 0.5).astype(np.int64)
    outputs = [augment_slice(image, label, seed) for seed in range(30)]
    for seed in range(30):
        again = augment_slice(image, label, seed)
        assert np.array_equal(again[0], outputs[seed][0]) and np.array_equal(again[1], outputs[seed][1])
    assert any(not np.array_equal(o[0], image) for o in outputs)


def test_augmentation_keeps_image_and_label_aligned():
    """Rotation, scaling and mirroring move the image and its label together: on an image that is bright
    exactly where an asymmetric structure is labelled, the bright pixels stay on the labelled ones (blur,
    noise and gamma soften the edges, so: nearly all labelled pixels bright, and the same centre)."""
    from scipy.ndimage import center_of_mass

    from samunet.trainers.augmentation import augment_slice

    label = np.zeros((40, 36), np.int64)
    label[8:30, 6:14] = 1  # an L: no mirror or 90-degree turn maps it onto itself
    label[24:30, 14:28] = 2
    image = np.stack([(label > 0).astype(np.float32) * 4.0 - 2.0] * 2)
    moved = 0
    for seed in range(40):
        augmented, augmented_label = augment_slice(image, label, seed)
        moved += not np.array_equal(augmented_label, label)
        bright = augmented[0] > np.mean(np.percentile(augmented[0], [5, 95]))
        labelled = augmented_label > 0
        assert (bright & labelled).sum() / labelled.sum() > 0.85, seed
        # a mirrored label alone would put the centre ~11 pixels away
        assert np.hypot(*np.subtract(center_of_mass(bright), center_of_mass(labelled))) < 3, seed
        assert set(np.unique(augmented_label)) <= {0, 1, 2}
    assert moved >= 30  # most draws mirror, rotate or scale: the checks above are not on unmoved slices


def test_loss_is_cross_entropy_plus_per_sample_foreground_dice():
    import torch.nn.functional as F

    torch.manual_seed(0)
    logits, target = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    target[0] = 0  # a sample without foreground: its Dice term rewards predicting none
    probs = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2)[:, 1:].float()
    dice = ((2 * (probs * onehot).sum((2, 3)) + 1e-5) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + 1e-5)).mean(1)
    expected = 0.3 * F.cross_entropy(logits, target) + 0.7 * (1 - dice.mean())
    assert ce_dice_loss(logits, target, 0.3, 0.7).item() == pytest.approx(expected.item(), rel=1e-6)
    # its closed-form backward gives autograd's gradient of the same formula
    for logits_k, k in ((logits, 3), (torch.randn(4, 2, 16, 16), 2)):
        target_k = torch.randint(0, k, (4, 16, 16))
        target_k[1] = 0
        ours = logits_k.clone().requires_grad_()
        ref = logits_k.clone().requires_grad_()
        (2.5 * ce_dice_loss(ours, target_k, 0.3, 0.7)).backward()
        p = torch.softmax(ref, 1)[:, 1:]
        oh = F.one_hot(target_k, k).permute(0, 3, 1, 2)[:, 1:].float()
        d = ((2 * (p * oh).sum((2, 3)) + 1e-5) / (p.sum((2, 3)) + oh.sum((2, 3)) + 1e-5)).mean(1)
        (2.5 * (0.3 * F.cross_entropy(ref, target_k) + 0.7 * (1 - d.mean()))).backward()
        torch.testing.assert_close(ours.grad, ref.grad, atol=1e-7, rtol=1e-4)
    # per-sample Dice: the mean over two halves equals the whole batch (what makes DDP exact)
    halves = (ce_dice_loss(logits[:2], target[:2]) + ce_dice_loss(logits[2:], target[2:])) / 2
    assert halves.item() == pytest.approx(ce_dice_loss(logits, target).item(), rel=1e-6)


def test_input_mapping_of_a_mixed_batch_equals_mapping_each_slice_alone():
    import torch.nn.functional as F

    from samunet.models.input_mapping import EncoderInput, InputMapper

    rng = np.random.default_rng(0)
    for channels in (1, 2, 3):
        mapper = InputMapper([[-1.0, 2.0]] * channels, EncoderInput.default(channels), (0, 255), 32,
                             torch.device("cpu"))
        shapes = [(20, 14), (9, 40), (20, 14), (9, 40), (20, 14)]  # two cases' slices, interleaved
        slices = [rng.normal(size=(channels, *s)).astype(np.float32) for s in shapes]
        labels = [rng.integers(0, 3, s) for s in shapes]
        batch, label_batch = mapper.images(slices), mapper.labels(labels)
        assert batch.shape == (5, 3, 32, 32) and label_batch.dtype == torch.int64
        for i, (s, lab) in enumerate(zip(slices, labels)):
            torch.testing.assert_close(batch[i], mapper.images([s])[0])
            assert torch.equal(label_batch[i], mapper.labels([lab])[0])
        # one slice by hand: window to [0, 1], scale to the input range, bilinear resize, channels to RGB
        x = (torch.as_tensor(slices[1]) + 1.0) / 3.0
        x = F.interpolate(x.clamp(0, 1)[None] * 255, size=(32, 32), mode="bilinear", align_corners=False)[0]
        rgb = x.expand(3, -1, -1) if channels == 1 else torch.cat([x, x.mean(0, keepdim=True)]) if channels == 2 else x
        torch.testing.assert_close(batch[1], rgb)


def test_a_cpu_run_uses_the_plans_cpu_batch_and_an_epoch_of_one_pass(dataset, env):
    from samunet.planners.backbone_sizing import CPU_BATCH_SIZE
    from samunet.planners.plan_file import PlanView
    from samunet.run_training import build_parser
    from samunet.trainers.trainer import iterations_per_epoch

    assert (iterations_per_epoch(10000, 8), iterations_per_epoch(1000, 8), iterations_per_epoch(30, 8)) == (250, 125, 25)
    plan = read_json(dataset / "samunet_plans.json")
    entry = plan["backbones"]["tiny"]
    assert entry["cpu_batch_size"] == min(entry["batch_size"], CPU_BATCH_SIZE)
    entry["batch_size"], entry["cpu_batch_size"] = 30, 2  # a GPU batch and a CPU batch, as a user may edit them
    write_json(plan, dataset / "samunet_plans.json")
    assert PlanView(plan).batch_size("tiny", "cuda") == 30
    trainer = train(build_parser().parse_args(["990", "linear_head", "0", "-b", "tiny", "--device", "cpu", "-np", "0",
                                               "--amp", "off", "--epochs", "1", "--val-slices", "2"]), show_progress=False)
    slices = sum(trainer.sampler.num_slices[c] for c in trainer.train_cases)
    assert trainer.batch_size == 2 and trainer.cfg.iters_per_epoch == max(25, -(-slices // 2))
    assert len(trainer.log["train_loss"]) == 1
    recorded = read_json(fold_folder(env, "linear_head") / "checkpoint_final.json")["training"]
    assert recorded == {"device": "cpu", "batch_size": 2, "iterations_per_epoch": trainer.cfg.iters_per_epoch}
    del entry["cpu_batch_size"]  # a plan from before the CPU batch: the GPU batch, at most CPU_BATCH_SIZE
    assert PlanView(plan).batch_size("tiny", "cpu") == min(30, CPU_BATCH_SIZE)


def test_a_refitted_lr_decay_continues_from_the_current_lr_and_reaches_0():
    def scheduler():
        return warmup_poly(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, 10)

    lambda_lr, schedule = scheduler()
    before = schedule(40)
    schedule.end_after(40, 60)  # fewer iterations fit than planned
    assert schedule(40) == pytest.approx(before) and schedule(41) < before
    assert schedule(59) > 0 and schedule(60) == 0.0 and schedule(70) == 0.0
    before, shorter = schedule(50), schedule(55)
    schedule.end_after(50, 80)  # then more
    assert schedule(50) == pytest.approx(before) and schedule(55) > shorter  # a slower decay from the same LR
    assert 0 < schedule(79) < before and schedule(80) == 0.0
    resumed, resumed_schedule = scheduler()  # the re-fit is in the scheduler state a checkpoint keeps
    resumed.load_state_dict(lambda_lr.state_dict())
    assert [resumed_schedule(i) for i in range(0, 90, 5)] == [schedule(i) for i in range(0, 90, 5)]
