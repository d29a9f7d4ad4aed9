"""Does self-supervised continued pretraining (samunet_pretrain) help few-label fine-tuning? Hippocampus.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ssl_pretraining.py --work /tmp/ssl --pretrain-minutes 15

The fixed split of benchmarks/hippocampus.py (8 test cases, 1 validation case, a pool of 191). LiteMedSAM
is pretrained once with samunet_pretrain's defaults (SimMIM, whole encoder; or --pretrain-tune lora) on the
images of the raw dataset (all 200 cases, test cases included, labels unused), for a wall-clock budget (or
--pretrain-epochs). Then each strategy is
fine-tuned on the first 1 and 5 pool cases, from the released encoder and from the pretrained one, with
the same number of iterations (a fixed budget that background load cannot shift between the two arms)
and each seed, and the test cases are predicted from their raw files with samunet_predict's defaults.
Writes WORK/ssl_pretraining.json (or --results; runs are reused when it already holds them) and prints
the table of every results file in WORK.

    # the LoRA-pretrained arm, beside a running default benchmark (same number of pretraining steps):
    ... --pretrain-tune lora --pretrain-epochs 4 --arms ssl_lora --strategies decoder lora_both \
        --results ssl_pretraining_lora.json
"""
import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, environment, evaluate, log, run, schedule, set_up, split  # noqa: E402

# iterations per run (batch 8): cached decoders are ~10x cheaper per iteration than lora_both
SCHEDULES = {"decoder": (20, 25), "lora_both": (10, 10), "lora_decoder": (20, 25)}
COUNTS = (1, 5)


def arm_name(tune):
    """The pretrained arm (and encoder name) of a --tune mode: `ssl` for the command's default."""
    return "ssl" if tune == "full" else f"ssl_{tune}"


def pretrain(work, env, tune, minutes=None, epochs=None):
    """Once per tune mode: for a wall-clock budget, or for a number of 50-iteration epochs."""
    name = arm_name(tune)
    results = work / "pretraining"
    folder = results / "Dataset501_Hippocampus" / "pretrained" / name
    if not (folder / "encoder.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        length = ["--epochs", str(epochs)] if epochs else ["--time-budget", str(minutes)]
        seconds = run(["samunet_pretrain", "501", "-b", "litemedsam", "--tune", tune, "--name", name, *length],
                      dict(env, SAMUNET_RESULTS=str(results)), work / f"pretrain_{name}.log")
        (folder / "command_seconds.txt").write_text(f"{seconds:.1f}\n")
    return folder, json.loads((folder / "encoder.json").read_text())


def fine_tune(work, env, spec, n, seed, pretrained_folder, images, labels):
    _, val, pool = split(work)
    pre = work / "sam_pre" / "Dataset501_Hippocampus"
    splits = json.dumps([{"train": pool, "val": val}])
    if (pre / "splits_final.json").read_text() != splits:  # written once: concurrent runs read it
        (pre / "splits_final.json").write_text(splits)
    arm = pretrained_folder.name if pretrained_folder else "released"
    strategy, epochs, iters = schedule(spec, SCHEDULES)
    tag = f"{spec}_n{n}_s{seed}_{arm}"
    results = work / "runs" / tag.replace(":", "-")
    shutil.rmtree(results, ignore_errors=True)
    flags, backbone = [], "litemedsam"
    if pretrained_folder:
        target = results / "Dataset501_Hippocampus" / "pretrained"
        target.mkdir(parents=True)
        (target / arm).symlink_to(pretrained_folder)
        flags, backbone = ["--pretrained", arm], f"litemedsam@{arm}"
    run_env = dict(env, SAMUNET_RESULTS=str(results))
    train_seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                         "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "8",
                         "--val-slices", "20", "-np", "0", "--seed", str(seed), *flags], run_env,
                        work / f"train_{tag}.log".replace(":", "-"))
    preds = work / "preds" / tag.replace(":", "-")
    shutil.rmtree(preds, ignore_errors=True)
    run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", strategy, "-b", backbone, "-f", "0",
         "-npp", "1", "-nps", "1"], run_env, work / f"predict_{tag}.log".replace(":", "-"))
    return {"train_command_seconds": train_seconds, "iterations": epochs * iters, "test": evaluate(labels, preds)}


def table(results, strategies, seeds, arms):
    lines = ["| strategy | labelled cases | encoder | test Dice: mean (per seed) | vs released (points) | HD95 (mm) |",
             "|---|---|---|---|---|---|"]
    for strategy in strategies:
        for n in COUNTS:
            for arm, _, dice, hd95, delta in arm_rows(results, f"{strategy}_n{n}", seeds, arms, "released"):
                lines.append(f"| {strategy} | {n} | {arm} | {dice} | {delta} | {hd95:.2f} |")
    return "\n".join(lines)


def finished_elsewhere(work, own):
    """Runs that another results file in WORK (another, concurrent invocation) holds."""
    done = set()
    for path in work.glob("ssl_pretraining*.json"):
        if path != own:
            done |= set(json.loads(path.read_text()))
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pretrain-minutes", type=float, default=15)
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="instead of a budget: epochs of 50 steps")
    parser.add_argument("--pretrain-tune", default="full", choices=("full", "lora", "adapter"))
    parser.add_argument("--arms", nargs="+", default=["released", "ssl"],
                        help="released and/or pretrained encoders made by earlier runs (ssl, ssl_lora, ...)")
    parser.add_argument("--strategies", nargs="+", default=list(SCHEDULES),
                        help="STRATEGY, or STRATEGY:ITERATIONS for another length than SCHEDULES'")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--results", default="ssl_pretraining.json", help="file in WORK (one per concurrent run)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet=False)
    start = time.perf_counter()
    folder, description = pretrain(work, env, args.pretrain_tune, args.pretrain_minutes, args.pretrain_epochs)
    log(f"pretrained encoder {folder.name}: {description['steps']} steps, final loss {description['final_loss']:.4f} "
        f"({time.perf_counter() - start:.0f} s)")
    out = work / args.results
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[f"pretraining_{folder.name}"] = dict(description,
                                                 command_seconds=float((folder / "command_seconds.txt").read_text()))
    for strategy in args.strategies:
        for n in COUNTS:
            for seed in args.seeds:
                for arm in args.arms:
                    tag = f"{strategy}_n{n}_s{seed}_{arm}"
                    if tag in results or tag in finished_elsewhere(work, out):
                        continue
                    arm_folder = None if arm == "released" else folder.parent / arm  # pretrained earlier
                    results[tag] = fine_tune(work, env, strategy, n, seed, arm_folder, images, labels)
                    log(f"{tag}: test Dice {results[tag]['test']['mean']['Dice']:.3f}")
                    out.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
                    os.replace(out.with_suffix(".tmp"), out)  # whole for concurrent readers
    merged = {}
    for path in sorted(work.glob("ssl_pretraining*.json")):  # every run's results, for one table
        merged |= json.loads(path.read_text())
    tags = [t for t in (re.fullmatch(r"(.+)_n\d+_s\d+_(.+)", k) for k in merged) if t]
    arms = ["released"] + sorted({t.group(2) for t in tags} - {"released"})
    specs = list(dict.fromkeys(t.group(1) for t in tags))
    print(table(merged, specs, args.seeds, arms))


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
