"""Does self-supervised continued pretraining (samunet_pretrain) help few-label fine-tuning? Hippocampus.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ssl_pretraining.py --work /tmp/ssl --pretrain-minutes 15

The fixed split of benchmarks/hippocampus.py (8 test cases, 1 validation case, a pool of 191). LiteMedSAM
is pretrained once with samunet_pretrain's defaults (SimMIM, whole encoder) on the images of the raw
dataset (all 200 cases, test cases included, labels unused), for a wall-clock budget. Then each strategy is
fine-tuned on the first 1 and 5 pool cases, from the released encoder and from the pretrained one, with
the same number of iterations (a fixed budget that background load cannot shift between the two arms)
and each seed, and the test cases are predicted from their raw files with samunet_predict's defaults.
Writes WORK/ssl_pretraining.json (runs are reused when it already holds them) and prints the table.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import environment, evaluate, log, run, set_up, split  # noqa: E402

# iterations per run (batch 8): cached decoders are ~10x cheaper per iteration than lora_both
SCHEDULES = {"decoder": (20, 25), "lora_both": (10, 10), "lora_decoder": (20, 25)}
COUNTS = (1, 5)
NAME = "ssl"


def pretrain(work, env, minutes):
    results = work / "pretraining"
    folder = results / "Dataset501_Hippocampus" / "pretrained" / NAME
    if not (folder / "encoder.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        seconds = run(["samunet_pretrain", "501", "-b", "litemedsam", "--time-budget", str(minutes), "--name", NAME],
                      dict(env, SAMUNET_RESULTS=str(results)), work / "pretrain.log")
        (folder / "command_seconds.txt").write_text(f"{seconds:.1f}\n")
    return folder, json.loads((folder / "encoder.json").read_text())


def fine_tune(work, env, strategy, n, seed, pretrained_folder, images, labels):
    _, val, pool = split(work)
    pre = work / "sam_pre" / "Dataset501_Hippocampus"
    (pre / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))
    arm = "ssl" if pretrained_folder else "released"
    tag = f"{strategy}_n{n}_s{seed}_{arm}"
    results = work / "runs" / tag
    shutil.rmtree(results, ignore_errors=True)
    flags, backbone = [], "litemedsam"
    if pretrained_folder:
        target = results / "Dataset501_Hippocampus" / "pretrained"
        target.mkdir(parents=True)
        (target / NAME).symlink_to(pretrained_folder)
        flags, backbone = ["--pretrained", NAME], f"litemedsam@{NAME}"
    run_env = dict(env, SAMUNET_RESULTS=str(results))
    epochs, iters = SCHEDULES[strategy]
    train_seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                         "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "8",
                         "--val-slices", "20", "-np", "0", "--seed", str(seed), *flags], run_env,
                        work / f"train_{tag}.log")
    preds = work / "preds" / tag
    shutil.rmtree(preds, ignore_errors=True)
    run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", strategy, "-b", backbone, "-f", "0",
         "-npp", "1", "-nps", "1"], run_env, work / f"predict_{tag}.log")
    return {"train_command_seconds": train_seconds, "iterations": epochs * iters, "test": evaluate(labels, preds)}


def table(results, strategies, seeds):
    lines = ["| strategy | labelled cases | test Dice, released encoder | test Dice, SSL encoder | difference "
             "(points) | HD95 released / SSL (mm) |", "|---|---|---|---|---|---|"]
    for strategy in strategies:
        for n in COUNTS:
            runs = {arm: [results.get(f"{strategy}_n{n}_s{s}_{arm}") for s in seeds] for arm in ("released", "ssl")}
            if not all(all(r for r in rs) for rs in runs.values()):
                continue
            dice = {arm: [r["test"]["mean"]["Dice"] for r in rs] for arm, rs in runs.items()}
            hd = {arm: sum(r["test"]["mean"]["HD95"] for r in rs) / len(rs) for arm, rs in runs.items()}
            mean = {arm: sum(v) / len(v) for arm, v in dice.items()}
            shown = {arm: f"{mean[arm]:.3f} ({' / '.join(f'{d:.3f}' for d in dice[arm])})" for arm in dice}
            lines.append(f"| {strategy} | {n} | {shown['released']} | {shown['ssl']} | "
                         f"{100 * (mean['ssl'] - mean['released']):+.1f} | {hd['released']:.2f} / {hd['ssl']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pretrain-minutes", type=float, default=15)
    parser.add_argument("--strategies", nargs="+", default=list(SCHEDULES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet=False)
    start = time.perf_counter()
    folder, description = pretrain(work, env, args.pretrain_minutes)
    log(f"pretrained encoder: {description['steps']} steps, final loss {description['final_loss']:.4f} "
        f"({time.perf_counter() - start:.0f} s)")
    out = work / "ssl_pretraining.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["pretraining"] = dict(description, command_seconds=float((folder / "command_seconds.txt").read_text()))
    for strategy in args.strategies:
        for n in COUNTS:
            for seed in args.seeds:
                for pretrained in (None, folder):
                    tag = f"{strategy}_n{n}_s{seed}_{'ssl' if pretrained else 'released'}"
                    if tag in results:
                        continue
                    results[tag] = fine_tune(work, env, strategy, n, seed, pretrained, images, labels)
                    log(f"{tag}: test Dice {results[tag]['test']['mean']['Dice']:.3f}")
                    out.write_text(json.dumps(results, indent=1))
    print(table(results, args.strategies, args.seeds))


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
