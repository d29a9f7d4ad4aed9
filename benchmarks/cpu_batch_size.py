"""Training batch size on a CPU: test Dice after the same wall-clock budget at batch 4, 8, 16 and 32.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_batch_size.py --work /tmp/cpu_batch --budget-minutes 3

The fixed split of benchmarks/hippocampus.py; LiteMedSAM `decoder` (cached) on the first 5 training cases,
samunet_train's defaults but --batch-size and --seed, under --time-budget (the LR decay fitted to it), the
embedding cache filled once before the runs (a warm cache for all, so the budget buys iterations only).
Each model predicts the 8 test volumes with samunet_predict's defaults. On a CPU a step's time grows
about linearly with the batch, so the question is whether more small steps beat fewer large ones within
the budget. Writes WORK/cpu_batch_size.json and prints the markdown table.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, evaluate, log, open_work, run, save, split  # noqa: E402

DATASET = "Dataset501_Hippocampus"
BATCHES = (4, 8, 16, 32)


def train_and_test(work, env, n, batch, seed, budget, images, labels):
    tag = f"n{n}_s{seed}_b{batch}"
    folder = work / "runs" / tag
    shutil.rmtree(folder, ignore_errors=True)
    run_env = dict(env, SAMUNET_RESULTS=str(folder))
    seconds = run(["samunet_train", "501", "decoder", "0", "-b", "litemedsam", "--num-train-cases", str(n),
                   "--epochs", "1000", "--batch-size", str(batch), "--time-budget", str(budget), "--seed", str(seed),
                   "-np", "0"], run_env, work / f"train_{tag}.log")
    log_text = (folder / DATASET / "decoder__litemedsam" / "fold_0" / "training_log.txt").read_text()
    preds = work / "preds" / tag
    shutil.rmtree(preds, ignore_errors=True)
    run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", "decoder", "-b", "litemedsam", "-f", "0",
         "-npp", "1", "-nps", "1"], run_env, work / f"predict_{tag}.log")
    return {"train_command_seconds": seconds, "epochs": log_text.count(": train loss"), "test": evaluate(labels, preds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--budget-minutes", type=float, default=3.0)
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    work, env, images, labels, out, results = open_work(args.work, "cpu_batch_size.json")
    _, val, pool = split(work)
    (work / "sam_pre" / DATASET / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))
    warm = dict(env, SAMUNET_RESULTS=str(work / "warm_up"))
    shutil.rmtree(work / "warm_up", ignore_errors=True)
    run(["samunet_train", "501", "decoder", "0", "-b", "litemedsam", "--num-train-cases", str(args.cases),
         "--epochs", "1", "--iters-per-epoch", "1", "-np", "0"], warm, work / "warm_up.log")
    for seed in args.seeds:
        for batch in BATCHES:
            key = f"n{args.cases}_s{seed}_b{batch}"
            if key not in results:
                results[key] = train_and_test(work, env, args.cases, batch, seed, args.budget_minutes, images, labels)
                log(f"{key}: {results[key]['epochs']} epochs, test Dice {results[key]['test']['mean']['Dice']:.3f}")
                save(out, results)
    lines = [f"| batch | epochs in {args.budget_minutes:g} min | test Dice: mean (per seed) | vs batch 8 (points) "
             "| HD95 (mm) |", "|---|---|---|---|---|"]
    for arm, runs, dice, hd95, delta in arm_rows(results, f"n{args.cases}", args.seeds,
                                                 [f"b{b}" for b in BATCHES], "b8"):
        lines.append(f"| {arm[1:]} | {' / '.join(str(r['epochs']) for r in runs)} | {dice} | {delta} | {hd95:.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
