"""`samunet_evaluate GT_FOLDER PRED_FOLDER (-d ID | -l 1 2) [-o summary.json]`: per case and per class
Dice, IoU, HD95 and NSD with the real voxel spacing, plus per-class and foreground means."""
import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samunet.errors import SamunetError, cli_entry
from samunet.evaluation.metrics import binary_metrics
from samunet.file_io import read_json, write_json
from samunet.imageio import SUPPORTED_ENDINGS, read_image
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


def evaluate_folders(ref_folder, pred_folder, labels, tolerance=1.0, voxel_units=False, num_processes=2):
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    for folder in (ref_folder, pred_folder):
        if not folder.is_dir():
            raise SamunetError(f"{folder}: folder not found")
    preds = sorted(p for p in pred_folder.iterdir() if p.name.endswith(SUPPORTED_ENDINGS) and not p.name.startswith("."))
    if not preds:
        raise SamunetError(f"{pred_folder}: no predictions")
    missing = [p.name for p in preds if not (ref_folder / p.name).is_file()]
    if missing:
        raise SamunetError(f"{ref_folder}: no reference for {', '.join(missing[:5])}")
    jobs = [(ref_folder / p.name, p, labels, tolerance, voxel_units) for p in preds]
    cases = map_with_progress(_case_metrics, jobs, num_processes, desc="evaluating")
    mean = {str(c): {m: _mean([case["metrics"][str(c)][m] for case in cases]) for m in METRICS} for c in labels}
    return {
        "settings": {"labels": labels, "nsd_tolerance_mm": tolerance, "units": "voxels" if voxel_units else "mm",
                     "empty_reference_rule": "NaN when both are empty (excluded from means)"},
        "mean": mean,
        "foreground_mean": {m: _mean([mean[str(c)][m] for c in labels]) for m in METRICS},
        "metric_per_case": cases,
    }


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
    add_num_processes_argument(p, default=2)
    args = p.parse_args(argv)
    labels = args.l or sorted(v for v in read_json(find_raw_dataset(args.d) / "dataset.json")["labels"].values() if v)
    summary = evaluate_folders(args.gt_folder, args.pred_folder, labels, args.nsd_tolerance, args.voxel_units, args.np)
    out = Path(args.o or Path(args.pred_folder) / "summary.json")
    write_json(summary, out)
    for c in labels:
        m = summary["mean"][str(c)]
        tqdm.write(f"label {c}: " + ", ".join(f"{k} {m[k]:.4f}" for k in METRICS))
    print(f"wrote {out}")
