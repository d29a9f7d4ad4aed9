"""`samunet_pretrain DATASET [-b BACKBONE] [--time-budget MIN | --epochs N --iters-per-epoch M]
[--extra-images FOLDER ...] [--tune full|lora|adapter] [--mask-ratio R] [--name NAME] [--c]`

Continues the pretraining of a backbone's image encoder, self-supervised, on every image of a planned
dataset (imagesTr and imagesTs; labels are never read) and of any extra folders of unlabelled volumes.
Output: $SAMUNET_RESULTS/DatasetXXX_Name/pretrained/<name>/ (encoder.pth, encoder.json, progress.png,
training_log.txt, reconstructions/). Use it with `samunet_train ... --pretrained <name>`.
Several GPUs (or CPU processes): `torchrun --nproc_per_node N -m samunet.pretraining.pretrain_cli ...`.
"""
import argparse
import contextlib

from samunet.cli_types import int_at_least, positive_float
from samunet.device import resolve_device
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import folder_lock
from samunet.layout import PLANS_FILE, pretrained_encoder_folder
from samunet.models.amp import default_amp
from samunet.models.backbone_registry import BACKBONES, NORMALIZATIONS
from samunet.models.pretrained_encoder import DESCRIPTION_FILE
from samunet.paths import find_preprocessed_dataset, find_raw_dataset, results_root
from samunet.planners.plan_file import read_plan
from samunet.preprocessing.unlabelled_images import prepare_unlabelled_images
from samunet.pretraining.pretrainer import TUNE_MODES, PretrainConfig, Pretrainer
from samunet.trainers.distributed import barrier, init_distributed, shutdown

BUDGET_EPOCHS = 1000  # with --time-budget and no --epochs: the budget decides
# Short epochs: a time budget fits the LR decay after the first epoch, so that epoch must be a small
# part of any budget, also on a CPU (where an iteration of LiteMedSAM at batch 32 takes seconds).
ITERS_PER_EPOCH = 50


def mask_ratio(text):
    value = positive_float(text)
    if not value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got '{text}'")
    return value


def build_parser():
    p = argparse.ArgumentParser(description="Self-supervised continued pretraining of a SAM image encoder on the "
                                            "dataset's images (labels unused).")
    p.add_argument("dataset", help="dataset id, e.g. 501")
    p.add_argument("-b", "--backbone", default=None, help="backbone (default: the plan's default_backbone)")
    p.add_argument("--checkpoint", default=None, help="base weights file (vit_*, medsam, sam_med2d, mobile_sam)")
    p.add_argument("--input-normalization", choices=list(NORMALIZATIONS), default=None,
                   help="as samunet_train's: how the --checkpoint's authors fed images (default: the plan's entry)")
    p.add_argument("--extra-images", nargs="+", default=[], metavar="FOLDER",
                   help="more folders of unlabelled volumes named {case}_0000<file_ending> (the plan's channels)")
    p.add_argument("--tune", choices=TUNE_MODES, default="full",
                   help="train the whole encoder (default), or LoRA / adapters in it")
    p.add_argument("--mask-ratio", type=mask_ratio, default=None,
                   help="share of masked patches (default: the objective's, 0.75 for MAE, 0.6 for SimMIM)")
    p.add_argument("--name", default=None, help="output name (default: <objective>_<tune>, e.g. simmim_full)")
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="MINUTES",
                   help="stop at the last iteration that fits this wall time; the LR decay is fitted to it")
    p.add_argument("--epochs", type=int_at_least(1), default=None,
                   help=f"default {PretrainConfig.epochs}, or {BUDGET_EPOCHS} (the budget decides) with --time-budget")
    p.add_argument("--iters-per-epoch", type=int_at_least(1), default=ITERS_PER_EPOCH)
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="default: the plan's for this backbone, batch_size on a GPU, cpu_batch_size on a CPU")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default 1e-4 for the whole encoder, 5e-4 for LoRA / adapters)")
    p.add_argument("--lora-rank", type=int_at_least(1), default=4)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default=None,
                   help="mixed precision (default: bf16 where supported, fp16 on older GPUs, else off)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("-np", type=int_at_least(1), default=2, help="processes preprocessing the images (default 2)")
    return p


def pretrain(args, show_progress=True):
    preprocessed = find_preprocessed_dataset(args.dataset)
    plan = read_plan(preprocessed / PLANS_FILE)
    backbone = args.backbone or plan["default_backbone"]
    if backbone not in plan["backbones"]:
        raise SamunetError(f"backbone {backbone} is not in {preprocessed / PLANS_FILE}")
    name = args.name or f"{BACKBONES[backbone].pretraining_objective}_{args.tune}"
    output = pretrained_encoder_folder(results_root() / preprocessed.name, name)
    latest = output / "checkpoint_latest.pth"
    if (output / DESCRIPTION_FILE).is_file():
        if args.c:
            print(f"{output}: pretraining already finished")
            return None
        raise SamunetError(f"{output}: holds a finished pretraining; choose another --name or remove the folder")
    if latest.is_file() and not args.c:
        raise SamunetError(f"{output}: holds a started pretraining; pass --c to continue or remove the folder")
    device = resolve_device(args.device)
    epochs = args.epochs or (BUDGET_EPOCHS if args.time_budget else PretrainConfig.epochs)
    config = PretrainConfig(backbone=backbone, tune=args.tune, mask_ratio=args.mask_ratio, epochs=epochs,
                            iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size, lr=args.lr,
                            amp=args.amp or default_amp(device), seed=args.seed,
                            time_budget_minutes=args.time_budget, lora_rank=args.lora_rank,
                            input_normalization=args.input_normalization)
    dist_info = init_distributed(device)
    try:
        with contextlib.ExitStack() as lock:
            if dist_info.is_main:  # one run per name at a time: a second one stops with one line
                lock.enter_context(folder_lock(output, "samunet_pretrain", wait=False))
            raw = find_raw_dataset(args.dataset)
            images = None
            for turn in ("main", "others"):  # rank 0 preprocesses; the others then find everything current
                if dist_info.is_main == (turn == "main"):
                    images = prepare_unlabelled_images(raw, preprocessed, plan, args.extra_images, args.np,
                                                       show_progress=show_progress and dist_info.is_main)
                barrier(dist_info)
            trainer = Pretrainer(config, plan, images, output, device, dist_info, base_checkpoint=args.checkpoint,
                                 show_progress=show_progress)
            if dist_info.is_main:
                trainer.write_log(f"{trainer.objective.__class__.__name__} on {backbone} ({args.tune}), mask ratio "
                                  f"{trainer.mask_ratio:g}, {len(images.case_ids)} cases, batch {trainer.batch_size}, "
                                  f"device {device}, amp {config.amp}")
            if args.c and latest.is_file():
                trainer.load(latest)
                if dist_info.is_main:
                    trainer.write_log(f"continuing from {latest} at epoch {trainer.start_epoch}")
            trainer.run()
            shutdown(dist_info, finished=True)
            return trainer
    finally:
        shutdown(dist_info)


@cli_entry
def main(argv=None):
    pretrain(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
