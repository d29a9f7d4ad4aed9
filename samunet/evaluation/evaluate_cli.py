"""`samunet_evaluate GT_FOLDER PRED_FOLDER (-d ID | -l 1 2) [-o summary.json]`: per case and per class
Dice, IoU, HD95 and NSD with the real voxel spacing, plus per-class and foreground means.

The summary records the predictions' prompt provenance (none, user, model, ground_truth: from the
folder's prediction_info.json), printed beside the means.

Every reference needs a prediction (as nnU-Net): missing ones are an error listing them, unless
--allow-missing, which evaluates the predicted cases and lists the others in the summary."""
import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samunet.errors import SamunetError, cli_entry
from samunet.evaluation.metrics import binary_metrics
from samunet.file_io import read_json, write_json
from samunet.imageio import SUPPORTED_ENDINGS, read_image
from samunet.inference.prediction_info import provenance_of
from samunet.parallel import add_num_processes_argument, map_with_progress
from samunet.paths import find_raw_dataset

METRICS = ("Dice", "IoU", "HD95", "NSD")


def _case_metrics(job):
    ref_path, pred_path, labels, tolerance, voxel_units = job
    ref, ref_geom = read_image(ref_path)
    pred, pred_geom = read_image(pred_path)
    if ref.shape != pred.shape:
        raise SamunetError(f"{pred_path}: shape {pred.shape} differs from the reference's {ref.shape}")
    differing = ref_geom.matches(pred_geom)
    if differing:
        raise SamunetError(f"{pred_path}: {', '.join(differing)} differ from the reference's")
    spacing = (1.0, 1.0, 1.0) if voxel_units else ref_geom.spacing_zyx
    return {
        "reference": str(ref_path), "prediction": str(pred_path),
        "metrics": {str(c): binary_metrics(pred == c, ref == c, spacing, tolerance) for c in labels},
    }


def _mean(values):
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _image_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(SUPPORTED_ENDINGS) and not p.name.startswith("."))


def evaluate_folders(ref_folder, pred_folder, labels, tolerance=1.0, voxel_units=False, num_processes=2,
                     cases=None, allow_missing=False, provenance=None):
    """Evaluate the predictions of `cases` (file names; default: every reference in `ref_folder`).
    `provenance`: of the predictions' prompts; default what samunet_predict recorded in the folder
    (`unknown` for folders it did not write)."""
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    for folder in (ref_folder, pred_folder):
        if not folder.is_dir():
            raise SamunetError(f"{folder}: folder not found")
    predicted = _image_files(pred_folder)
    unknown = [n for n in predicted if not (ref_folder / n).is_file()]
    if cases is None:
        if unknown:
            raise SamunetError(f"{ref_folder}: no reference for {', '.join(unknown[:5])}")
        cases = _image_files(ref_folder)
    missing = [n for n in cases if n not in set(predicted)]
    if missing and not allow_missing:
        raise SamunetError(f"{pred_folder}: no prediction for {len(missing)} reference case(s): "
                           f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} "
                           "(--allow-missing evaluates the predicted ones only)")
    names = [n for n in cases if n not in set(missing)]
    if not names:
        raise SamunetError(f"{pred_folder}: no predictions")
    jobs = [(ref_folder / n, pred_folder / n, labels, tolerance, voxel_units) for n in names]
    per_case = map_with_progress(_case_metrics, jobs, num_processes, desc="evaluating")
    mean = {str(c): {m: _mean([case["metrics"][str(c)][m] for case in per_case]) for m in METRICS} for c in labels}
    return {
        "settings": {"labels": labels, "nsd_tolerance_mm": tolerance, "units": "voxels" if voxel_units else "mm",
                     "empty_reference_rule": "NaN when both are empty (excluded from means)",
                     "one_side_empty_rule": "Dice 0, NSD 0, HD95 the volume's diagonal (in the means)"},
        "prompt_provenance": provenance or provenance_of(pred_folder) or "unknown",
        "missing_predictions": missing,
        "mean": mean,
        "foreground_mean": {m: _mean([mean[str(c)][m] for c in labels]) for m in METRICS},
        "metric_per_case": per_case,
    }


def check_summary_target(out, ref_folder):
    """-o may name a new .json file, or replace a summary samunet_evaluate wrote, never anything else,
    and never a file among the references."""
    out = Path(out).resolve()
    if out.suffix != ".json":
        raise SamunetError(f"{out}: the summary is JSON; give -o a name ending in .json")
    if out.is_relative_to(Path(ref_folder).resolve()):
        raise SamunetError(f"{out}: inside the reference folder {ref_folder}; write the summary elsewhere")
    if out.exists():
        try:
            ours = isinstance(existing := read_json(out), dict) and "metric_per_case" in existing
        except SamunetError:
            ours = False
        if not ours:
            raise SamunetError(f"{out}: exists and is not a samunet_evaluate summary; choose another -o")


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate predicted label maps against references.")
    p.add_argument("gt_folder")
    p.add_argument("pred_folder")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-d", help="dataset id: evaluate every foreground label of its dataset.json")
    group.add_argument("-l", type=int, nargs="+", help="label values to evaluate")
    p.add_argument("-o", default=None, help="summary file (default PRED_FOLDER/summary.json)")
    p.add_argument("--nsd-tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default 1)")
    p.add_argument("--voxel-units", action="store_true", help="spacing 1 (the SAMed / TransUNet convention)")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate only the predicted cases when some references have no prediction")
    add_num_processes_argument(p, default=2)
    args = p.parse_args(argv)
    labels = args.l or sorted(v for v in read_json(find_raw_dataset(args.d) / "dataset.json")["labels"].values() if v)
    out = Path(args.o or Path(args.pred_folder) / "summary.json")
    check_summary_target(out, args.gt_folder)
    summary = evaluate_folders(args.gt_folder, args.pred_folder, labels, args.nsd_tolerance, args.voxel_units, args.np,
                               allow_missing=args.allow_missing)
    if summary["missing_predictions"]:
        print(f"warning: {len(summary['missing_predictions'])} reference case(s) without a prediction were left out "
              "(listed in the summary under missing_predictions)")
    write_json(summary, out)
    for c in labels:
        m = summary["mean"][str(c)]
        tqdm.write(f"label {c}: " + ", ".join(f"{k} {m[k]:.4f}" for k in METRICS))
    m = summary["foreground_mean"]
    print("foreground mean: " + ", ".join(f"{k} {m[k]:.4f}" for k in METRICS) +
          f"  [prompts: {summary['prompt_provenance']}]")
    print(f"wrote {out}")
