"""A short LiteMedSAM `decoder` run with the embedding cache and default settings on real hippocampus
cases (skipped without ../shared/data): the trained head must beat the untrained one on the validation
case, and must not collapse to all-background (SAMed users' most common complaint)."""
import pytest
import torch

from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.file_io import write_json
from samunet.planners.cli import run_fingerprint, run_planning
from samunet.preprocessing.preprocess_dataset import preprocess_dataset
from samunet.trainers.distributed import DistInfo
from samunet.trainers.trainer import CachedEmbeddingTrainer, TrainConfig

from conftest import SHARED_DATA, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.real_data]


def test_litemedsam_decoder_with_cache_beats_untrained_head(env):
    convert_msd(["-i", str(SHARED_DATA / "Task04_Hippocampus"), "-overwrite_id", "501", "-np", "2"])
    raw = env.raw / "Dataset501_Hippocampus"
    keep = {"hippocampus_001", "hippocampus_003", "hippocampus_004"}
    for folder in ("imagesTr", "labelsTr"):  # a three-case dataset keeps the one-time cache fill short
        for p in (raw / folder).iterdir():
            if p.name.split(".")[0].removesuffix("_0000") not in keep:
                p.unlink()
    meta = __import__("json").loads((raw / "dataset.json").read_text())
    meta["numTraining"] = 3
    (raw / "dataset.json").write_text(__import__("json").dumps(meta))
    run_fingerprint(501, 2)
    run_planning(501)
    preprocessed = env.preprocessed / raw.name
    write_json([{"train": ["hippocampus_001", "hippocampus_004"], "val": ["hippocampus_003"]}],
               preprocessed / "splits_final.json")
    preprocess_dataset(501, 2)

    config = TrainConfig(strategy="decoder", backbone="litemedsam", fold="0", epochs=4, iters_per_epoch=20,
                         batch_size=8, amp="bf16", val_slices=40)  # default lr, loss and sampling
    trainer = CachedEmbeddingTrainer(config, preprocessed, env.results / "fold_0", torch.device("cpu"), DistInfo(),
                                     show_progress=False)
    trainer.prepare()
    untrained = trainer.evaluate(trainer.val_specs)
    trainer.run()
    trained = trainer.log["pseudo_dice"][-1]
    untrained_mean = sum(untrained.values()) / len(untrained)
    print(f"hippocampus decoder: untrained {untrained_mean:.3f} -> trained {trained:.3f}; cache fill "
          f"{trainer.fill_seconds:.0f} s, epochs {trainer.log['epoch_seconds']}")
    assert trained > untrained_mean + 0.1
    inputs, _ = trainer._plain_inputs(trainer.val_specs[:8])  # foreground slices come first
    with torch.no_grad():
        assert (trainer._trained_module()(inputs).argmax(1) > 0).any()


# Held-out Dice after the run below (250 iterations, the commands' defaults). 80 iterations were too few:
# the model was still leaving the all-background start, and held-out Dice ranged 0.22-0.65 between runs.
MIN_HELDOUT_DICE = 0.4
TTA_TOLERANCE = 0.02  # default prediction may mirror; it must not score lower than this below unmirrored


def test_default_prediction_of_held_out_cases_is_as_good_as_unmirrored(env, tmp_path):
    """What a user runs: samunet_train (cached `decoder`, briefly) and samunet_predict with its defaults on
    hippocampus cases the model never saw, against the same prediction with --disable-tta."""
    from samunet.evaluation.evaluate_cli import main as evaluate
    from samunet.file_io import read_json
    from samunet.inference.predict_cli import main as predict
    from samunet.plan_and_preprocess import main as plan_and_preprocess
    from samunet.trainers.run_training import main as samunet_train

    convert_msd(["-i", str(SHARED_DATA / "Task04_Hippocampus"), "-overwrite_id", "501", "-np", "2"])
    raw = env.raw / "Dataset501_Hippocampus"
    train_cases = {"hippocampus_001", "hippocampus_003", "hippocampus_004"}
    heldout = ["hippocampus_006", "hippocampus_007", "hippocampus_008", "hippocampus_011"]
    images, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    images.mkdir()
    labels.mkdir()
    for case in heldout:
        (raw / "imagesTr" / f"{case}_0000.nii.gz").rename(images / f"{case}_0000.nii.gz")
        (raw / "labelsTr" / f"{case}.nii.gz").rename(labels / f"{case}.nii.gz")
    for folder in ("imagesTr", "labelsTr"):
        for p in (raw / folder).iterdir():
            if p.name.split(".")[0].removesuffix("_0000") not in train_cases:
                p.unlink()
    meta = read_json(raw / "dataset.json")
    write_json(meta | {"numTraining": len(train_cases)}, raw / "dataset.json")
    plan_and_preprocess(["-d", "501", "-np", "2"])
    write_json([{"train": ["hippocampus_001", "hippocampus_004"], "val": ["hippocampus_003"]}],
               env.preprocessed / raw.name / "splits_final.json")
    samunet_train(["501", "decoder", "0", "-b", "litemedsam", "--epochs", "10", "--iters-per-epoch", "25", "-np", "0"])
    scores = {}
    for name, flags in (("default", []), ("unmirrored", ["--disable-tta"])):
        out = tmp_path / name
        predict(["-i", str(images), "-o", str(out), "-npp", "1", "-nps", "1", *flags])
        evaluate([str(labels), str(out), "-d", "501", "-np", "1"])
        scores[name] = read_json(out / "summary.json")["foreground_mean"]["Dice"]
    print(f"held-out Dice: default {scores['default']:.3f}, --disable-tta {scores['unmirrored']:.3f}")
    assert scores["default"] >= scores["unmirrored"] - TTA_TOLERANCE
    assert scores["default"] > MIN_HELDOUT_DICE
