"""A short LiteMedSAM pretraining run (SimMIM, the command's defaults but the length) on the images of a few
real hippocampus cases lowers the masked reconstruction loss on slices of other cases, which it never saw
(skipped without ../shared/data)."""
import json

import pytest
import torch

from samunet.dataset_conversion.convert_msd import main as convert_msd
from samunet.planners.cli import run_fingerprint, run_planning
from samunet.planners.plan_file import PlanView, read_plan
from samunet.preprocessing.unlabelled_images import prepare_unlabelled_images
from samunet.pretraining.pretrain_cli import build_parser, pretrain
from samunet.pretraining.pretrainer import Pretrainer
from samunet.trainers.slice_dataset import SliceDataset
from samunet.trainers.slice_sampler import SliceSpec

from conftest import hippocampus_subset, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.real_data]

TRAINING = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006")
HELD_OUT = ("hippocampus_007", "hippocampus_008")


def test_litemedsam_pretraining_lowers_the_masked_loss_on_unseen_slices(env, tmp_path, monkeypatch):
    convert_msd(["-i", str(hippocampus_subset(tmp_path, TRAINING + HELD_OUT)), "-overwrite_id", "501", "-np", "2"])
    raw = env.raw / "Dataset501_Hippocampus"
    held_out_images = tmp_path / "held_out"
    held_out_images.mkdir()
    for folder in ("imagesTr", "labelsTr"):
        for p in list((raw / folder).iterdir()):
            case = p.name.split(".")[0].removesuffix("_0000")
            if case in HELD_OUT and folder == "imagesTr":
                p.rename(held_out_images / p.name)
            elif case not in TRAINING:
                p.unlink()
    meta = json.loads((raw / "dataset.json").read_text())
    (raw / "dataset.json").write_text(json.dumps(dict(meta, numTraining=len(TRAINING))))
    run_fingerprint(501, 2)  # planning reads the labelled cases; pretraining only images
    run_planning(501)
    preprocessed = env.preprocessed / raw.name
    plan = read_plan(preprocessed / "samunet_plans.json")
    held_out = prepare_unlabelled_images(raw, preprocessed, plan, [held_out_images], show_progress=False)
    slices = SliceDataset(held_out.data_folder, PlanView(plan).encoder_input, augment=False)
    specs = [SliceSpec(c, s, 0) for c in held_out.case_ids if c.startswith("x") for s in range(8, 28, 2)]
    assert len(specs) == 20
    losses = {}
    original_run = Pretrainer.run

    def measured_run(trainer):  # the held-out loss before and after the run, with the same masks
        losses["before"] = trainer.reconstruction_loss(specs, slices)
        original_run(trainer)
        losses["after"] = trainer.reconstruction_loss(specs, slices)

    monkeypatch.setattr(Pretrainer, "run", measured_run)
    trainer = pretrain(build_parser().parse_args(["501", "--epochs", "3", "--iters-per-epoch", "10",
                                                  "--batch-size", "8"]), show_progress=False)
    print(f"held-out masked L1: {losses['before']:.4f} -> {losses['after']:.4f}; training log {trainer.log}")
    assert trainer.images.counts == {"imagesTr": len(TRAINING)}
    assert not set(trainer.images.case_ids) & set(held_out.case_ids) - {f"Tr_{c}" for c in TRAINING}
    assert losses["after"] < 0.8 * losses["before"]
    assert torch.isfinite(torch.tensor(trainer.log["train_loss"])).all()
