"""`samunet_train DATASET STRATEGY [FOLD] [-b BACKBONE] ...`: fine-tune one fold.

Results go to $SAMUNET_RESULTS/DatasetXXX_Name/<strategy>__<backbone>[@pretrained][__prompts-<kind>]/fold_F/ (checkpoints, progress.png,
training_log.txt, validation/summary.json), with the plan and dataset.json copied one level up.
Multi-GPU (or multi-process CPU): `torchrun --nproc_per_node N -m samunet.run_training ...`.
Training (trainers/) is followed by the fold's final validation (fold_validation.py, on the main process).
"""
import argparse
import contextlib

from samunet.cli_types import fraction, int_at_least, non_negative_float, positive_float
from samunet.device import resolve_device
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import folder_lock
from samunet.fold_validation import validate_fold
from samunet.layout import PLANS_FILE, VALIDATION_FOLDER, configuration_name, fold_folder, pretrained_encoder_folder
from samunet.models.amp import default_amp
from samunet.models.backbone_registry import NORMALIZATIONS
from samunet.models.heads import HEADS
from samunet.models.pretrained_encoder import read_description
from samunet.models.strategies import STRATEGIES
from samunet.paths import find_preprocessed_dataset, find_raw_dataset, results_root
from samunet.planners.plan_file import read_plan
from samunet.prompts.derivation import KINDS
from samunet.synthesis.methods import DEFAULT_METHOD, METHODS
from samunet.synthesis.synthetic_set import synthesize_set
from samunet.trainers.distributed import init_distributed, shutdown
from samunet.trainers.trainer import SamTrainer, TrainConfig, copy_run_description


def build_parser():
    p = argparse.ArgumentParser(description="Fine-tune a SAM backbone on one cross-validation fold.")
    p.add_argument("dataset", help="dataset id, e.g. 501")
    p.add_argument("strategy", choices=list(STRATEGIES))
    p.add_argument("fold", nargs="?", default="0", help="fold 0-4 or 'all' (default 0)")
    p.add_argument("-b", "--backbone", default=None, help="backbone (default: the plan's default_backbone)")
    p.add_argument("--checkpoint", default=None, help="base weights file (vit_*, medsam, sam_med2d, mobile_sam; "
                   "samunet_strategies -b BACKBONE --checkpoint FILE checks one)")
    p.add_argument("--input-normalization", choices=list(NORMALIZATIONS), default=None,
                   help="what the encoder's weights were trained on, for a --checkpoint the backbone's default does "
                        "not fit: sam (0..255, SAM's pixel mean/std) or unit ([0, 1]: MedSAM, MedicoSAM). "
                        "Default: the plan's entry for the backbone")
    p.add_argument("--pretrained", default=None, metavar="NAME",
                   help="start from the encoder samunet_pretrain made under this name (results go to "
                        "<strategy>__<backbone>@NAME)")
    p.add_argument("--epochs", type=int_at_least(1), default=50)
    p.add_argument("--iters-per-epoch", type=int_at_least(1), default=None,
                   help="default: one pass over the training slices, at least 25 and at most 250")
    p.add_argument("--batch-size", type=int_at_least(1), default=None,
                   help="default: the plan's for this backbone, batch_size on a GPU, cpu_batch_size on a CPU")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default 5e-4; 1e-4 for 'full')")
    p.add_argument("--num-train-cases", type=int_at_least(1), default=None,
                   help="few-shot: train on the first N cases of the fold's training split")
    p.add_argument("--synthesis", nargs="?", const=DEFAULT_METHOD, choices=list(METHODS), default=None,
                   help="few-shot: also train on cases synthesised from the N exemplars and the unlabelled images "
                        f"(samunet_synthesize; made or brought up to date first). Method default {DEFAULT_METHOD}")
    p.add_argument("--synthetic-fraction", type=fraction, default=TrainConfig.synthetic_fraction,
                   help=f"share of training slices drawn from synthetic cases (default {TrainConfig.synthetic_fraction})")
    p.add_argument("--prompts", choices=KINDS, default=None,
                   help="prompted training: per slice and class, a box / point / both drawn from the label "
                        "(results go to <strategy>__<backbone>__prompts-<kind>); the class outputs are trained too")
    p.add_argument("--box-jitter", default=None, metavar="PIXELS|PERCENT",
                   help="prompted training: each box side moves outwards by a random 0..PIXELS at input size "
                        "(MedSAM; default 5 at 256, scaled to the input size) or 0..PERCENT%% of the box extent "
                        "(finetune-SAM: 10%%)")
    p.add_argument("--negative-point-probability", type=fraction, default=TrainConfig.negative_point_probability,
                   help="prompted training with points: chance of also giving a negative point "
                        f"(default {TrainConfig.negative_point_probability})")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default=None,
                   help="mixed precision (default: bf16 where supported, fp16 on older GPUs, else off)")
    p.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--val", action="store_true", help="only run the final validation of a trained fold")
    p.add_argument("-np", type=int_at_least(0), default=2, help="data loading worker processes (default 2)")
    p.add_argument("--no-cache", action="store_true", help="never cache embeddings of a frozen encoder")
    p.add_argument("--no-augmentation", action="store_true", help="train on slices as preprocessed")
    p.add_argument("--cache-mirroring", action=argparse.BooleanOptionalAction, default=TrainConfig.cache_mirroring,
                   help="cached training: also cache and train on mirrored slices (4x the cache fill), so that "
                        "prediction can mirror")
    p.add_argument("--val-slices", type=int_at_least(1), default=100, help="slices in the per-epoch validation")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--time-budget", type=positive_float, default=None, metavar="MINUTES",
                   help="stop at the last iteration that fits this wall time (model building and the "
                        "embedding cache count; the final 3D validation does not); the LR decay is fitted to it")
    p.add_argument("--ce-weight", type=non_negative_float, default=0.2)
    p.add_argument("--dice-weight", type=non_negative_float, default=0.8)
    p.add_argument("--lora-rank", type=int_at_least(1), default=4)
    return p


def train(args, show_progress=True):
    preprocessed = find_preprocessed_dataset(args.dataset)
    plan = read_plan(preprocessed / PLANS_FILE)
    backbone = args.backbone or plan["default_backbone"]
    if args.fold != "all" and not args.fold.isdigit():
        raise SamunetError(f"fold must be a number or 'all', got '{args.fold}'")
    device = resolve_device(args.device)
    config = TrainConfig(
        strategy=args.strategy, backbone=backbone, fold=args.fold, epochs=args.epochs,
        iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size, lr=args.lr,
        ce_weight=args.ce_weight, dice_weight=args.dice_weight, num_train_cases=args.num_train_cases,
        amp=args.amp or default_amp(device), num_workers=args.np, use_cache=not args.no_cache,
        augment=not args.no_augmentation, cache_mirroring=args.cache_mirroring, val_slices=args.val_slices,
        seed=args.seed, lora_rank=args.lora_rank, time_budget_minutes=args.time_budget,
        synthesis=args.synthesis, synthetic_fraction=args.synthetic_fraction, prompts=args.prompts,
        box_jitter=args.box_jitter, negative_point_probability=args.negative_point_probability,
        input_normalization=args.input_normalization,
    )
    if args.prompts and not HEADS[STRATEGIES[args.strategy].head].uses_prompts:
        raise SamunetError(f"--prompts: strategy {args.strategy} has the {STRATEGIES[args.strategy].head} head, which "
                           "takes no prompts; use a strategy with the sam_decoder head (samunet_strategies lists them)")
    if not args.prompts and (args.box_jitter is not None):
        raise SamunetError("--box-jitter is for prompted training: add --prompts box (or point, box+point)")
    config.prompt_rule()  # a bad --box-jitter is one line now
    if args.synthesis and args.num_train_cases is None:
        raise SamunetError("--synthesis needs --num-train-cases N (the labelled exemplars)")
    pretrained = None
    if args.pretrained:
        pretrained = pretrained_encoder_folder(results_root() / preprocessed.name, args.pretrained)
        read_description(pretrained)  # exists and is complete: one line now rather than after the set-up
    configuration = results_root() / preprocessed.name / configuration_name(args.strategy, backbone, args.pretrained, args.prompts)
    output = fold_folder(configuration, args.fold)
    latest, final = output / "checkpoint_latest.pth", output / "checkpoint_final.pth"
    validate_only = args.val
    if args.val:
        if not final.is_file():
            raise SamunetError(f"{final}: not trained yet (no final checkpoint)")
    elif args.c and final.is_file() and not latest.is_file():
        if (output / VALIDATION_FOLDER / "summary.json").is_file():
            print(f"{output}: training already finished")
            return None
        print(f"{output}: training finished; running its final validation, which did not complete")
        validate_only = True
    elif not args.c and (latest.is_file() or final.is_file()):
        raise SamunetError(f"{output}: holds a trained or started fold; pass --c to continue or remove the folder")

    dist_info = init_distributed(device)
    try:
        with contextlib.ExitStack() as lock:
            if dist_info.is_main:  # one run of a fold at a time: a second one stops with one line
                lock.enter_context(folder_lock(output, "samunet_train", wait=False))
            if args.synthesis and not validate_only:
                # Every rank asks; the set's lock lets one make it and the others then find it current. A
                # file lock, not a barrier: synthesis can outlast the process group's collective timeout.
                synthesize_set(find_raw_dataset(args.dataset), preprocessed, plan, args.fold, args.num_train_cases,
                               args.synthesis, num_processes=max(1, args.np),
                               show_progress=show_progress and dist_info.is_main)
            trainer = SamTrainer(config, preprocessed, output, device, dist_info, base_checkpoint=args.checkpoint,
                                 show_progress=show_progress, pretrained_encoder=pretrained)
            if dist_info.is_main:
                copy_run_description(preprocessed, configuration)
                encoder = f" with pretrained encoder {args.pretrained}" if args.pretrained else ""
                synthetic = (f" + {len(trainer.synthetic.case_ids)} synthetic ({args.synthesis}, "
                             f"{config.synthetic_fraction:g} of the slices)" if trainer.synthetic else "")
                prompted = f", prompted ({args.prompts})" if args.prompts else ""
                trainer.write_log(f"{type(trainer.inputs).__name__}: {args.strategy}{prompted} on {backbone}{encoder}, fold {args.fold}, device {device}, "
                                  f"amp {config.amp}, batch {trainer.batch_size}, {trainer.cfg.iters_per_epoch} iterations per epoch, "
                                  f"{len(trainer.train_cases)} training cases"
                                  f"{synthetic}")
            if validate_only:
                trainer.load(final)
                shutdown(dist_info, finished=True)
                return final_validation(trainer) if dist_info.is_main else None
            if args.c and latest.is_file():
                trainer.load(latest)
                trainer.write_log(f"continuing from {latest} at epoch {trainer.start_epoch}")
            trainer.run()
            shutdown(dist_info, finished=True)  # validation needs no peers: they need not wait for it
            if dist_info.is_main:
                final_validation(trainer)
            return trainer
    finally:
        shutdown(dist_info)


def final_validation(trainer):
    return validate_fold(trainer.model, trainer.preprocessed, trainer.val_cases, trainer.output, trainer.device,
                         trainer.cfg.amp, trainer.batch_size, trainer.show_progress, trainer.write_log)


@cli_entry
def main(argv=None):
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
