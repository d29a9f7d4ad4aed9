"""All training cases within a wall-clock budget, with the commands' defaults (issue: accuracy on every scan).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/full_data.py --work /tmp/full --budget-minutes 40

The fixed hippocampus split of benchmarks/hippocampus.py: all 191 pool cases for training, the 8 test cases
predicted from their raw files. `samunet_train 501 STRATEGY 0 -b litemedsam --time-budget B --epochs 1000
-np 0` and nothing else: the plan's CPU batch, the data-scaled epoch, the embedding cache filled from cold
inside the budget (or, when the fill would not fit, uncached training); `--epochs 1000` only so that the
budget, not the default 50 epochs, ends the run. Then `samunet_predict` with its defaults. With
`--fused-slices N ...` each strategy also runs on the plan with `encoder_input.fused_slices` set to each N
(3D context in the head), otherwise on the plan as planned. Writes WORK/full_data.json and prints one
table row per run.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import evaluate, log, open_work, run, save, split  # noqa: E402

DATASET = "Dataset501_Hippocampus"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--budget-minutes", type=float, default=40.0)
    parser.add_argument("--strategies", nargs="+", default=["decoder"])
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--fused-slices", nargs="+", type=int, default=[None],
                        help="plan variants: neighbours each side fused in the head (default: as planned)")
    args = parser.parse_args()
    work, env, images, labels, out, results = open_work(args.work, "full_data.json")
    _, val, pool = split(work)
    pre = work / "sam_pre" / DATASET
    (pre / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))
    planned = json.loads((pre / "samunet_plans.json").read_text())
    for strategy, fused in [(s, f) for s in args.strategies for f in args.fused_slices]:
        plan = json.loads(json.dumps(planned))
        if fused is not None:
            plan["encoder_input"]["fused_slices"] = fused
        (pre / "samunet_plans.json").write_text(json.dumps(plan, indent=2))
        fused = plan["encoder_input"].get("fused_slices", 0)
        key = f"{strategy}_fused{fused}_{args.budget_minutes:g}min_s{args.seed}"
        if key in results:
            continue
        shutil.rmtree(pre / "embedding_cache", ignore_errors=True)  # the fill counts, from cold
        folder = work / "runs" / key
        shutil.rmtree(folder, ignore_errors=True)
        run_env = dict(env, SAMUNET_RESULTS=str(folder))
        seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--time-budget",
                       str(args.budget_minutes), "--epochs", "1000", "--seed", str(args.seed), "-np", "0"],
                      run_env, work / f"train_{key}.log")
        log_text = (folder / DATASET / f"{strategy}__litemedsam" / "fold_0" / "training_log.txt").read_text()
        preds = work / "preds" / key
        shutil.rmtree(preds, ignore_errors=True)
        predict_seconds = run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", strategy, "-b",
                               "litemedsam", "-f", "0", "-npp", "1", "-nps", "1"], run_env, work / f"predict_{key}.log")
        results[key] = {"train_command_seconds": seconds, "fused_slices": fused,
                        "epochs": log_text.count(": train loss"),
                        "uncached": "training without the cache" in log_text,
                        "predict_seconds_per_case": predict_seconds / len(list(images.iterdir())),
                        "test": evaluate(labels, preds), "log_head": log_text.splitlines()[:4]}
        save(out, results)
        r = results[key]
        log(f"| {strategy} | {fused} | {len(pool)} | {args.budget_minutes:g} | {r['epochs']} | "
            f"{r['test']['mean']['Dice']:.3f} | {r['test']['mean']['HD95']:.2f} | "
            f"{r['predict_seconds_per_case']:.1f} |")


if __name__ == "__main__":
    main()
