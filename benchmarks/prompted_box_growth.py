"""How far boxes derived from a model's own masks should grow (inference/prompt_sources.py MODEL_MASK_GROWTH).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/prompted_box_growth.py --work /tmp/prompted

Runs on the prompted models benchmarks/prompted.py trained in WORK (`runs/*_prompted`, all case counts and
seeds found), on tuning cases that are neither test nor validation cases and that no model with fewer than
20 labelled cases trained on: pool cases 20..29 of the fixed split. Per model: its own prompt-free
prediction of the tuning images (samunet_predict_from_modelfolder, default settings: the first pass of
`--prompts auto`), then prompted prediction from those masks with each --box-growth, evaluated in mm. The
test cases are never used to choose. Writes WORK/box_growth.json and prints the table.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import environment, evaluate, log, run, split  # noqa: E402

GROWTHS = (0.5, 1.0, 1.5, 2.0, 3.0)
TUNING = slice(20, 30)
DATASET = "Dataset501_Hippocampus"


def tuning_cases(work):
    """Copy the tuning cases' raw images and labels out of the raw dataset, as a user would have them."""
    images, labels = work / "tune" / "imagesTs", work / "tune" / "labelsTs"
    raw = work / "raw" / DATASET
    _, _, pool = split(work)
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case in pool[TUNING]:
        for source, target in ((raw / "imagesTr" / f"{case}_0000.nii.gz", images),
                               (raw / "labelsTr" / f"{case}.nii.gz", labels)):
            if not (target / source.name).is_file():
                shutil.copyfile(source, target / source.name)
    return images, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    work = args.work.resolve()
    env = environment(work)
    images, labels = tuning_cases(work)
    out = work / "box_growth.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    runs = sorted(p for p in (work / "runs").glob("*_prompted") if int(p.name.split("_n")[1].split("_")[0]) < 20
                  and list(p.glob(f"{DATASET}/*/fold_0/checkpoint_final.pth")))
    for run_folder in runs:
        tag = run_folder.name
        model = next((run_folder / DATASET).glob("*__prompts-box"))
        run_env = dict(env, SAMUNET_RESULTS=str(run_folder))
        first = work / "tune_preds" / f"{tag}_first_pass"
        if not (first / "prediction_info.json").is_file():
            shutil.rmtree(first, ignore_errors=True)
            run(["samunet_predict_from_modelfolder", "-i", images, "-o", first, "-m", model, "-f", "0",
                 "-npp", "1", "-nps", "1"], run_env, work / f"tune_{tag}_first.log")
        results.setdefault(tag, {})["first_pass"] = evaluate(labels, first)["mean"]["Dice"]
        for growth in GROWTHS:
            key = f"growth_{growth:g}"
            if key in results[tag]:
                continue
            preds = work / "tune_preds" / f"{tag}_{key}"
            shutil.rmtree(preds, ignore_errors=True)
            run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", "decoder", "-b", "litemedsam",
                 "-f", "0", "-npp", "1", "-nps", "1", "--prompts", first, "--box-growth", str(growth)],
                run_env, work / f"tune_{tag}_{key}.log")
            results[tag][key] = evaluate(labels, preds)["mean"]["Dice"]
            log(f"{tag} {key}: tuning Dice {results[tag][key]:.3f} (first pass {results[tag]['first_pass']:.3f})")
            out.write_text(json.dumps(results, indent=1))
    header = "| model | first pass (prompt-free) | " + " | ".join(f"growth {g:g}" for g in GROWTHS) + " |"
    lines = [header, "|---" * (2 + len(GROWTHS)) + "|"]
    for tag, row in sorted(results.items()):
        lines.append(f"| {tag} | {row['first_pass']:.3f} | " + " | ".join(
            f"{row.get(f'growth_{g:g}', float('nan')):.3f}" for g in GROWTHS) + " |")
    means = {g: sum(r[f"growth_{g:g}"] for r in results.values()) / len(results) for g in GROWTHS}
    lines.append("| mean | " + f"{sum(r['first_pass'] for r in results.values()) / len(results):.3f} | "
                 + " | ".join(f"{means[g]:.3f}" for g in GROWTHS) + " |")
    print("\n".join(lines))
    print(f"best growth on the tuning cases: {max(means, key=means.get):g}")


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
