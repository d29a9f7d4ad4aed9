"""`samunet_determine_postprocessing` and `samunet_apply_postprocessing`.

For each foreground class, keeping only its largest connected component (26-connectivity) is tried on
the cross-validation predictions of a configuration (fold_*/validation/). The rule is kept for a class when
it raises that class's mean Dice and lowers no class (removed voxels become background). The decision is
written to <configuration>/postprocessing.json, which apply reads.
"""
import argparse
from pathlib import Path

import numpy as np

from samunet.connected_components import keep_largest_component
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import read_json, write_json
from samunet.imageio import SUPPORTED_ENDINGS, read_image, write_image
from samunet.inference.model_selection import resolve_model
from samunet.inference.predict_cli import check_output_folder
from samunet.layout import GT_FOLDER, PLANS_FILE
from samunet.paths import find_preprocessed_dataset
from samunet.planners.plan_file import PlanView, read_plan

POSTPROCESSING_FILE = "postprocessing.json"
APPLIED_FILE = "postprocessing_info.json"  # marks a folder samunet_apply_postprocessing wrote


def _dice(pred, ref):
    p, r = pred.sum(), ref.sum()
    return float("nan") if p + r == 0 else 2 * np.logical_and(pred, ref).sum() / (p + r)


def _mean_dice(pairs, labels, rule_labels=()):
    per_class = {c: [] for c in labels}
    for pred, ref in pairs:
        pred = keep_largest_component(pred, rule_labels) if rule_labels else pred
        for c in labels:
            per_class[c].append(_dice(pred == c, ref == c))
    return {c: float(np.nanmean(v)) if not all(np.isnan(v)) else float("nan") for c, v in per_class.items()}


def determine(model_folder, gt_folder, labels, file_ending):
    pairs = []
    for prediction in sorted(Path(model_folder).glob(f"fold_*/validation/*{file_ending}")):
        pairs.append((read_image(prediction)[0], read_image(gt_folder / prediction.name)[0]))
    if not pairs:
        raise SamunetError(f"{model_folder}: no validation predictions (fold_*/validation/) to decide on")
    before = _mean_dice(pairs, labels)
    chosen, current = [], before
    for c in labels:
        trial = _mean_dice(pairs, labels, chosen + [c])
        better = trial[c] > current[c]
        no_worse = all(np.isnan(current[k]) or trial[k] >= current[k] for k in labels)
        if better and no_worse:
            chosen.append(c)
            current = trial
    result = {"keep_largest_component_for_labels": chosen, "cases": len(pairs),
              "dice_before": {str(k): v for k, v in before.items()}, "dice_after": {str(k): v for k, v in current.items()}}
    write_json(result, Path(model_folder) / POSTPROCESSING_FILE)
    return result


@cli_entry
def determine_main(argv=None):
    p = argparse.ArgumentParser(description="Decide per class whether keeping the largest component helps.")
    p.add_argument("-d", required=True, help="dataset id")
    p.add_argument("-s", "--strategy", default=None)
    p.add_argument("-b", "--backbone", default=None)
    args = p.parse_args(argv)
    folders, _, description = resolve_model(args.d, [args.strategy] if args.strategy else None, args.backbone)
    if len(folders) != 1:
        raise SamunetError("postprocessing is decided per configuration: choose one with -s and -b")
    preprocessed = find_preprocessed_dataset(args.d)
    plan = read_plan(preprocessed / PLANS_FILE)
    labels = PlanView(plan).foreground_labels
    ending = read_json(preprocessed / "dataset.json")["file_ending"]
    result = determine(folders[0], preprocessed / GT_FOLDER, labels, ending)
    print(f"{description}: keep the largest component for labels {result['keep_largest_component_for_labels']} "
          f"(Dice before {result['dice_before']}, after {result['dice_after']}) -> {folders[0] / POSTPROCESSING_FILE}")


@cli_entry
def apply_main(argv=None):
    p = argparse.ArgumentParser(description="Apply a postprocessing.json to a folder of predictions.")
    p.add_argument("-i", required=True, help="folder of predictions")
    p.add_argument("-o", required=True, help="output folder (never the input folder)")
    p.add_argument("-pp", required=True, help="postprocessing.json from samunet_determine_postprocessing")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output folder that holds files this command did not write")
    args = p.parse_args(argv)
    src, dst = Path(args.i).resolve(), Path(args.o).resolve()
    if src == dst:
        raise SamunetError(f"{dst}: the output folder must differ from the input folder")
    if not src.is_dir():
        raise SamunetError(f"{src}: folder not found")
    rules = read_json(args.pp)
    rule = rules.get("keep_largest_component_for_labels") if isinstance(rules, dict) else None
    if not isinstance(rule, list):
        raise SamunetError(f"{args.pp}: not a postprocessing.json (no 'keep_largest_component_for_labels' list)")
    check_output_folder(dst, args.overwrite, APPLIED_FILE, "samunet_apply_postprocessing")
    files = sorted(f for f in src.iterdir() if f.name.endswith(SUPPORTED_ENDINGS) and not f.name.startswith("."))
    write_json({"source": str(src), "keep_largest_component_for_labels": rule}, dst / APPLIED_FILE)
    for f in files:
        seg, geometry = read_image(f)
        write_image(keep_largest_component(seg, rule), geometry, dst / f.name)
    print(f"wrote {len(files)} file(s) to {dst} (largest component kept for labels {rule})")
