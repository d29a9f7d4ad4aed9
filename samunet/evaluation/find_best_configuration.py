"""`samunet_find_best_configuration 501`: rank every trained configuration (<strategy>__<backbone>) by
cross-validation foreground Dice, try ensembles of the best ones, and write the winner with the command
that predicts with it to $SAMUNET_RESULTS/DatasetXXX_Name/best_configuration.json.

The score of a configuration is the mean over all validation cases of all folds of the case's mean
Dice over foreground classes (classes absent from both reference and prediction do not count), read from
each fold's validation/summary.json. Ensembles average the saved validation probabilities of their members
(members must share a backbone, so one input mapping serves them) and are evaluated the same way.
The validation predictions mirror as samunet_predict does (along the axes each model was trained to see
mirrored); best_configuration.json names the axes prediction with the winner will mirror along (for an
ensemble, those all its members allow).
"""
import argparse
import itertools
from pathlib import Path

import numpy as np

from samunet.errors import SamunetError, cli_entry
from samunet.evaluation.evaluate_cli import evaluate_folders
from samunet.file_io import read_json, write_json
from samunet.imageio import read_image, write_image
from samunet.inference.mirroring import allowed_mirroring_axes
from samunet.layout import (BEST_CONFIGURATION_FILE, GT_FOLDER, PLANS_FILE, VALIDATION_FOLDER, fold_folder,
                            is_prompted_configuration)
from samunet.paths import find_dataset, find_preprocessed_dataset, results_root
from samunet.planners.plan_file import PlanView, read_plan


def case_scores(summary):
    scores = {}
    for case in summary["metric_per_case"]:
        dice = [m["Dice"] for m in case["metrics"].values() if not np.isnan(m["Dice"])]
        scores[Path(case["prediction"]).name] = float(np.mean(dice)) if dice else float("nan")
    return scores


def configuration_scores(dataset_folder, folds):
    """{configuration: {case file: score}} for configurations with validation results for every fold."""
    found = {}
    # prompted configurations are validated with prompts from the reference labels: not comparable, left out
    for conf in sorted(p for p in dataset_folder.iterdir() if p.is_dir() and "__" in p.name and "+" not in p.name
                       and not is_prompted_configuration(p.name)):
        summaries = [fold_folder(conf, f) / VALIDATION_FOLDER / "summary.json" for f in folds]
        if all(s.is_file() for s in summaries):
            found[conf.name] = {k: v for s in summaries for k, v in case_scores(read_json(s)).items()}
        else:
            print(f"skipped {conf.name}: not every fold of {' '.join(folds)} has validation results")
    return found


def _mean(scores):
    values = [v for v in scores.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def evaluate_ensemble(dataset_folder, members, folds, gt_folder, labels, file_ending):
    out = dataset_folder / "ensembles" / "+".join(members)
    written = []
    for fold in folds:
        val = fold_folder(dataset_folder / members[0], fold) / VALIDATION_FOLDER
        for npz in sorted(val.glob("*.npz")):
            probs = np.mean([np.load(fold_folder(dataset_folder / m, fold) / VALIDATION_FOLDER / npz.name)["probabilities"]
                             .astype(np.float32) for m in members], axis=0)
            case_id = npz.stem
            _, geometry = read_image(val / f"{case_id}{file_ending}")
            write_image(probs.argmax(0).astype(np.uint8), geometry, out / f"{case_id}{file_ending}")
            written.append(f"{case_id}{file_ending}")
    summary = evaluate_folders(gt_folder, out, labels, num_processes=1, cases=written)
    write_json(summary, out / "summary.json")
    return case_scores(summary)


def mirroring_axes(dataset_folder, members, folds):
    """The slice axes samunet_predict will mirror along for these members and folds (from the checkpoints'
    readable metadata; a checkpoint without the record allows none)."""
    metadata = []
    for member in members:
        for fold in folds:
            path = fold_folder(dataset_folder / member, fold) / "checkpoint_final.json"
            metadata.append(read_json(path) if path.is_file() else {})
    return allowed_mirroring_axes(metadata)


def find_best(dataset_id, folds=("0", "1", "2", "3", "4"), ensembles=True):
    dataset_folder = find_dataset(results_root(), dataset_id)
    preprocessed = find_preprocessed_dataset(dataset_id)
    plan = read_plan(preprocessed / PLANS_FILE)
    file_ending = read_json(preprocessed / "dataset.json")["file_ending"]
    labels = PlanView(plan).foreground_labels
    scores = configuration_scores(dataset_folder, list(folds))
    if not scores:
        raise SamunetError(f"{dataset_folder}: no configuration has validation results for folds {' '.join(folds)}")
    ranking = sorted(({"configuration": n, "cv_foreground_dice": _mean(s)} for n, s in scores.items()),
                     key=lambda r: -np.nan_to_num(r["cv_foreground_dice"], nan=-1))
    if ensembles:
        top = [r["configuration"] for r in ranking[:3]]
        for pair in itertools.combinations(top, 2):
            if pair[0].split("__")[1] != pair[1].split("__")[1]:
                continue  # members must share a backbone
            ens = evaluate_ensemble(dataset_folder, list(pair), folds, preprocessed / GT_FOLDER, labels, file_ending)
            ranking.append({"configuration": "+".join(pair), "cv_foreground_dice": _mean(ens)})
        ranking.sort(key=lambda r: -np.nan_to_num(r["cv_foreground_dice"], nan=-1))
    best = ranking[0]["configuration"]
    members = best.split("+")
    strategies = " ".join(m.split("__")[0] for m in members)
    command = (f"samunet_predict -i INPUT_FOLDER -o OUTPUT_FOLDER -d {dataset_folder.name} -s {strategies} "
               f"-b {members[0].split('__')[1]} -f {' '.join(folds)}")
    result = {"configuration": best, "members": members, "folds": list(folds),
              "cv_foreground_dice": ranking[0]["cv_foreground_dice"], "ranking": ranking, "predict_command": command,
              "mirroring_axes": mirroring_axes(dataset_folder, members, folds)}
    write_json(result, dataset_folder / BEST_CONFIGURATION_FILE)
    return result


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(description="Rank trained configurations by cross-validation Dice.")
    p.add_argument("dataset")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0-4)")
    p.add_argument("--no-ensembling", action="store_true")
    args = p.parse_args(argv)
    result = find_best(args.dataset, args.f, not args.no_ensembling)
    for row in result["ranking"]:
        print(f"{row['cv_foreground_dice']:.4f}  {row['configuration']}")
    print(f"best: {result['configuration']}\npredict with:\n  {result['predict_command']}")
    print(f"(test-time mirroring along slice axes {result['mirroring_axes']}: those its training mirrored)")
