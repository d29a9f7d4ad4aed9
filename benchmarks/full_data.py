"""All training cases within a wall-clock budget, with the commands' defaults (issue: accuracy on every scan).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/full_data.py --work /tmp/full --budget-minutes 40

The fixed hippocampus split of benchmarks/hippocampus.py: all 191 pool cases for training, the 8 test cases
predicted from their raw files. `samunet_train 501 STRATEGY 0 -b litemedsam --time-budget B --epochs 1000
-np 0` and nothing else: the plan's CPU batch, the data-scaled epoch, the embedding cache filled from cold
inside the budget (or, when the fill would not fit, uncached training); `--epochs 1000` only so that the
budget, not the default 50 epochs, ends the run. Then `samunet_predict` with its defaults. With
`--fused-slices N ...` each strategy also runs on the plan with `encoder_input.fused_slices` set to each N
(3D context in the head), otherwise on the plan as planned. With `--prompts box` the runs train prompted
(`samunet_train --prompts box`) and the test volumes are predicted three times: without prompts (the
defaults), with `--prompts auto` (provenance model) and with `samunet_make_prompts` boxes of the test labels
(ground_truth). Writes WORK/full_data.json and prints one table row per run and prediction; a run already
there is not trained again, only its missing predictions are made.
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
    parser.add_argument("--prompts", choices=["box"], help="train prompted; predict without, auto and reference prompts")
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
        key += f"_prompts-{args.prompts}" if args.prompts else ""
        configuration = f"{strategy}__litemedsam" + (f"__prompts-{args.prompts}" if args.prompts else "")
        folder = work / "runs" / key
        run_env = dict(env, SAMUNET_RESULTS=str(folder))
        if key not in results:
            shutil.rmtree(pre / "embedding_cache", ignore_errors=True)  # the fill counts, from cold
            shutil.rmtree(folder, ignore_errors=True)
            seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--time-budget",
                           str(args.budget_minutes), "--epochs", "1000", "--seed", str(args.seed), "-np", "0",
                           *(["--prompts", args.prompts] if args.prompts else [])],
                          run_env, work / f"train_{key}.log")
            log_text = (folder / DATASET / configuration / "fold_0" / "training_log.txt").read_text()
            results[key] = {"train_command_seconds": seconds, "fused_slices": fused,
                            "epochs": log_text.count(": train loss"),
                            "uncached": "training without the cache" in log_text,
                            "log_head": log_text.splitlines()[:4]}
            save(out, results)
        # a prompted model without prompts is predicted from its folder (samunet_predict -s picks prompt-free ones)
        model = ["-m", folder / DATASET / configuration] if args.prompts else [
            "-d", "501", "-s", strategy, "-b", "litemedsam"]
        arms = {"": []}
        if args.prompts:
            arms |= {"_auto": ["--prompts", "auto"], "_reference": ["--prompts", reference_prompts(work, env, labels)]}
        for suffix, flags in arms.items():
            if f"test{suffix}" in results[key]:
                continue
            preds = work / "preds" / (key + suffix)
            shutil.rmtree(preds, ignore_errors=True)
            command = "samunet_predict_from_modelfolder" if args.prompts else "samunet_predict"
            predict_seconds = run([command, "-i", images, "-o", preds, *model, "-f", "0", "-npp", "1", "-nps", "1",
                                   *flags], run_env, work / f"predict_{key}{suffix}.log")
            results[key][f"predict_seconds_per_case{suffix}"] = predict_seconds / len(list(images.iterdir()))
            results[key][f"test{suffix}"] = evaluate(labels, preds)
            save(out, results)
            r = results[key]
            log(f"| {strategy}{' ' + args.prompts if args.prompts else ''} | {fused} | {len(pool)} | "
                f"{args.budget_minutes:g} | {r['epochs']} | prompts {suffix[1:] or 'none'} | "
                f"{r[f'test{suffix}']['mean']['Dice']:.3f} | {r[f'test{suffix}']['mean']['HD95']:.2f} | "
                f"{r[f'predict_seconds_per_case{suffix}']:.1f} |")


def reference_prompts(work, env, labels):
    """Boxes from the test labels, as samunet_make_prompts writes them by default (provenance ground_truth)."""
    prompts = work / "test_prompts.json"
    if not prompts.is_file():
        run(["samunet_make_prompts", labels, "-o", prompts], env, work / "make_prompts.log")
    return prompts


if __name__ == "__main__":
    main()
