"""`samunet_demo`: the whole pipeline on a built-in default in a few minutes on a CPU.

raw (synthetic phantoms, or --raw DatasetXXX_Name of the user's) -> fingerprint, plan, preprocess ->
[--pretrained: self-supervised pretraining of the encoder on the images] -> fine-tune LiteMedSAM (bundled weights; -b for another backbone) -> predict held-out cases from their raw
files -> evaluate in mm -> overlay PNGs and progress.png. Everything is written inside --output (its own raw / preprocessed /
results folders: the user's SAMUNET_* folders and a --raw dataset are only read). Running it again in the
same folder reuses what is finished (plan, preprocessed data, embedding cache, trained model).
"""
import argparse
import os
import time
from pathlib import Path

from samunet.cli_types import int_at_least
from samunet.dataset_conversion.synthetic import generate_synthetic_dataset
from samunet.device import resolve_device
from samunet.errors import SamunetError, cli_entry
from samunet.evaluation.evaluate_cli import evaluate_folders
from samunet.evaluation.overlays import write_overlay
from samunet.file_io import copy_file, write_json
from samunet.inference.predict_cli import predict_folder
from samunet.inference.predictor import SlicePredictor
from samunet.layout import PLANS_FILE, SPLITS_FILE, configuration_name
from samunet.models.amp import default_amp
from samunet.models.strategies import STRATEGIES
from samunet.paths import PREPROCESSED_VAR, RAW_VAR, RESULTS_VAR, parse_dataset_id
from samunet.planners.cli import run_fingerprint, run_planning
from samunet.planners.plan_file import PlanView, read_plan
from samunet.preprocessing.preprocess_dataset import preprocess_dataset
from samunet.pretraining.pretrain_cli import build_parser as build_pretrain_parser
from samunet.pretraining.pretrain_cli import pretrain
from samunet.raw_dataset import load_raw_dataset
from samunet.run_training import build_parser as build_train_parser
from samunet.run_training import train

MARKER = "samunet_demo.json"
SYNTHETIC_ID = 990
DEFAULT_BACKBONE = "litemedsam"  # bundled pretrained weights: needs no files of the user's


def prepare_output(output):
    """The demo writes only into a folder that is new, empty, or an earlier demo's."""
    output = Path(output).resolve()
    if output.exists():
        if not output.is_dir():
            raise SamunetError(f"{output}: exists and is not a folder")
        if any(output.iterdir()) and not (output / MARKER).is_file():
            raise SamunetError(f"{output}: not empty and not a samunet_demo folder; choose another --output")
    for name in ("raw", "preprocessed", "results"):
        (output / name).mkdir(parents=True, exist_ok=True)
    return output


def locate_raw(args, output):
    """(raw root, dataset id): the user's dataset read in place, or synthetic phantoms made once."""
    if args.raw:
        folder = Path(args.raw).resolve()
        if not (folder / "dataset.json").is_file():
            raise SamunetError(f"{folder}: not an nnU-Net v2 dataset folder (no dataset.json)")
        return folder.parent, parse_dataset_id(folder.name)
    if not any((output / "raw").glob(f"Dataset{SYNTHETIC_ID:03d}_*")):
        generate_synthetic_dataset(output / "raw", SYNTHETIC_ID, num_cases=args.train_cases + args.heldout_cases,
                                   spacing_jitter=0.1, seed=0)
    return output / "raw", SYNTHETIC_ID


def demo_split(case_ids, num_train, num_heldout):
    """The last `num_heldout` cases (sorted ids) are held out; training uses the `num_train` before them."""
    case_ids = sorted(case_ids)
    if num_train + num_heldout > len(case_ids):
        raise SamunetError(f"the dataset has {len(case_ids)} labelled cases; --train-cases {num_train} + "
                           f"--heldout-cases {num_heldout} is more")
    heldout = case_ids[len(case_ids) - num_heldout :]
    return case_ids[len(case_ids) - num_heldout - num_train : len(case_ids) - num_heldout], heldout


def copy_heldout(raw, heldout, folder):
    """Held-out cases as a user would have them: raw images in imagesTs/, references in labelsTs/."""
    images, labels = folder / "imagesTs", folder / "labelsTs"
    for sub in (images, labels):
        sub.mkdir(parents=True, exist_ok=True)
    for case_id in heldout:
        for path in raw.cases[case_id].images:
            copy_file(path, images / path.name)
        copy_file(raw.cases[case_id].label, labels / raw.cases[case_id].label.name)
    return images, labels


def print_table(summary, class_names):
    print(f"\n{'class':<16} {'Dice':>7} {'HD95 (mm)':>10} {'NSD@1mm':>8}")
    for value, name in class_names.items():
        m = summary["mean"][str(value)]
        print(f"{name:<16} {m['Dice']:7.3f} {m['HD95']:10.2f} {m['NSD']:8.3f}")
    m = summary["foreground_mean"]
    print(f"{'mean':<16} {m['Dice']:7.3f} {m['HD95']:10.2f} {m['NSD']:8.3f}\n")


def run_demo(args):
    start = time.perf_counter()
    output = prepare_output(args.output)
    raw_root, dataset_id = locate_raw(args, output)
    os.environ.update({RAW_VAR: str(raw_root), PREPROCESSED_VAR: str(output / "preprocessed"),
                       RESULTS_VAR: str(output / "results")})
    write_json({"raw": str(raw_root), "dataset": dataset_id, "strategy": args.strategy}, output / MARKER)

    print(f"[1/5] fingerprint, plan and preprocess dataset {dataset_id}")
    run_fingerprint(dataset_id, args.np)
    run_planning(dataset_id)
    preprocess_dataset(dataset_id, args.np)
    preprocessed = next((output / "preprocessed").glob(f"Dataset{dataset_id:03d}_*"))
    raw = load_raw_dataset(raw_root / preprocessed.name)
    train_cases, heldout = demo_split(raw.cases, args.train_cases, args.heldout_cases)
    # One fold: the demo's training cases against its held-out ones (the 5-fold split stays for real runs).
    write_json([{"train": train_cases, "val": heldout}], preprocessed / SPLITS_FILE)

    device_flag = ["--device", args.device] if args.device else []
    if args.pretrained:
        print(f"[2/5] pretrain the {args.backbone} encoder on the images of all {len(raw.cases)} cases "
              f"(labels unused) as '{args.pretrained}', {args.pretrain_epochs} epochs, unless done before")
        pretrain(build_pretrain_parser().parse_args(
            [str(dataset_id), "-b", args.backbone, "--name", args.pretrained, "--epochs", str(args.pretrain_epochs),
             "--iters-per-epoch", str(args.iters_per_epoch), "--batch-size", str(args.batch_size), "--c",
             "-np", str(args.np), *device_flag]), show_progress=not args.quiet)
    print(f"[2/5] fine-tune {args.backbone} ({args.strategy}) on {len(train_cases)} cases, {args.epochs} epochs")
    train_args = build_train_parser().parse_args(
        [str(dataset_id), args.strategy, "0", "-b", args.backbone, "--epochs", str(args.epochs), "--iters-per-epoch",
         str(args.iters_per_epoch), "--batch-size", str(args.batch_size), "-np", "0", "--c", *device_flag]
        + (["--pretrained", args.pretrained] if args.pretrained else []))
    train(train_args, show_progress=not args.quiet)
    model_folder = output / "results" / preprocessed.name / configuration_name(args.strategy, args.backbone,
                                                                             args.pretrained)
    copy_file(model_folder / "fold_0" / "progress.png", output / "progress.png")

    print(f"[3/5] predict {len(heldout)} held-out cases from their raw files")
    images, labels = copy_heldout(raw, heldout, output / "heldout")
    device = resolve_device(args.device)
    predictor = SlicePredictor.from_model_folder([model_folder], ["0"], device=device, amp=default_amp(device))
    predictions = output / "predictions"
    _, failures = predict_folder(predictor, images, predictions, num_preprocess=1, num_export=1,
                                 description=f"{model_folder}, fold 0")
    if failures:
        raise SamunetError(f"prediction failed: {failures[0]}")

    print("[4/5] evaluate against the held-out labels (spacing in mm)")
    plan = read_plan(model_folder / PLANS_FILE)
    class_names = PlanView(plan).class_names_by_value
    summary = evaluate_folders(labels, predictions, sorted(class_names), num_processes=1)
    write_json(summary, predictions / "summary.json")
    print_table(summary, class_names)

    print("[5/5] overlays")
    overlays = output / "overlays"
    overlays.mkdir(exist_ok=True)
    slicing_axis = plan["transpose_forward"][plan["slicing_axis"]]
    ending = raw.file_ending
    for case_id in heldout:
        write_overlay(images / f"{case_id}_0000{ending}", labels / f"{case_id}{ending}",
                      predictions / f"{case_id}{ending}", slicing_axis, overlays / f"{case_id}.png", title=case_id)
    print(f"done in {time.perf_counter() - start:.0f} s. In {output}: predictions/ (+ summary.json), "
          f"overlays/*.png, progress.png, results/ (the trained model)")
    return summary


def build_parser():
    p = argparse.ArgumentParser(description="Run samunet end to end: data -> plan -> fine-tuned LiteMedSAM -> "
                                "predictions -> Dice table and overlays, all inside --output.")
    p.add_argument("--output", default="samunet_demo", help="work folder (default ./samunet_demo)")
    p.add_argument("--raw", default=None, help="an nnU-Net v2 dataset folder DatasetXXX_Name (default: synthetic phantoms)")
    p.add_argument("--strategy", choices=list(STRATEGIES), default="decoder",
                   help="default decoder: frozen encoder with cached embeddings, the fastest on a CPU")
    p.add_argument("-b", "--backbone", default=DEFAULT_BACKBONE,
                   help="default litemedsam (bundled weights); vit_b etc. need SAMUNET_CHECKPOINTS")
    p.add_argument("--train-cases", type=int_at_least(1), default=9)
    p.add_argument("--heldout-cases", type=int_at_least(1), default=3)
    p.add_argument("--epochs", type=int_at_least(1), default=6)
    p.add_argument("--iters-per-epoch", type=int_at_least(1), default=25)
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--pretrained", default=None, metavar="NAME",
                   help="first pretrain the encoder self-supervised on the dataset's images (samunet_pretrain) "
                        "under this name, or reuse it when done before, and fine-tune from it")
    p.add_argument("--pretrain-epochs", type=int_at_least(1), default=4,
                   help="epochs of --pretrained (of --iters-per-epoch iterations; default 4)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("-np", type=int_at_least(1), default=2, help="processes for preprocessing (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_entry
def main(argv=None):
    run_demo(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
