"""3D context for a slice model: neighbouring slices as the encoder's channels, or their embeddings
fused in the head (plan `encoder_input`).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/context_slices.py --work /tmp/context
    OMP_WAIT_POLICY=PASSIVE python benchmarks/context_slices.py --work /tmp/context --arms context_0 fused_1

The fixed split of benchmarks/hippocampus.py (8 test cases, 1 validation case, the first n of the pool
for training). Per strategy, case count and seed, the same training run (same iterations, batch and seed)
on plans that differ only in `encoder_input`: `context_0` (the slice repeated in SAM's 3 channels, no
fusion: the baseline), `context_N` (slices z-N .. z+N as the channels) and `fused_N` (each slice encoded
alone, the head fusing the embeddings of z-N .. z+N). Equal iterations are an equal budget for the
cached `decoder` (fusion reads neighbours' cached embeddings); strategies that train the encoder pay
2N + 1 encoder passes per slice with fusion, so their rows state the seconds. Test cases are predicted
from their raw files with samunet_predict's defaults and evaluated in mm. Writes WORK/context_slices.json
(runs it holds are reused) and prints the markdown table.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, evaluate, log, open_work, run, save, schedule, split  # noqa: E402

SCHEDULES = {"decoder": (20, 25), "lora_both": (25, 10)}  # (epochs, iterations per epoch), batch 8
DATASET = "Dataset501_Hippocampus"
ARMS = ("context_0", "context_1")
HOW = {"context": "slices z-{n} .. z+{n} as channels", "fused": "slices z-{n} .. z+{n} fused in the head"}


def use_context(work, arm):
    from samunet.models.input_mapping import EncoderInput

    kind, n = arm.split("_")
    path = work / "sam_pre" / DATASET / "samunet_plans.json"
    plan = json.loads(path.read_text())
    plan["encoder_input"].update(EncoderInput.default(1, int(n) if kind == "context" else 0).fields())
    plan["encoder_input"]["fused_slices"] = int(n) if kind == "fused" else 0
    path.write_text(json.dumps(plan, indent=2))
    _, val, pool = split(work)
    (path.parent / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))


def one_run(work, env, spec, n, seed, arm, images, labels):
    strategy, epochs, iters = schedule(spec, SCHEDULES)
    use_context(work, arm)
    tag = f"{spec.replace(':', '-')}_n{n}_s{seed}_{arm}"
    folder = work / "runs" / tag
    shutil.rmtree(folder, ignore_errors=True)
    run_env = dict(env, SAMUNET_RESULTS=str(folder))
    seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                   "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "8", "--val-slices", "20",
                   "-np", "0", "--seed", str(seed)], run_env, work / f"train_{tag}.log")
    preds = work / "preds" / tag
    shutil.rmtree(preds, ignore_errors=True)
    predict_seconds = run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", strategy, "-b", "litemedsam",
                           "-f", "0", "-npp", "1", "-nps", "1"], run_env, work / f"predict_{tag}.log")
    return {"train_command_seconds": seconds, "iterations": epochs * iters, "predict_seconds": predict_seconds,
            "test": evaluate(labels, preds)}


def describe(arm):
    kind, n = arm.split("_")
    return "slice z alone" if n == "0" else HOW[kind].format(n=n)


def table(results, strategies, counts, seeds, arms):
    lines = ["| strategy | labelled cases | training iterations | 3D context | test Dice: mean (per seed) | "
             "vs context_0 (points) | HD95 (mm) | train command (s) |", "|---|---|---|---|---|---|---|---|"]
    for strategy in strategies:
        for n in counts:
            prefix = f"{strategy.replace(':', '-')}_n{n}"
            for arm, runs, dice, hd95, delta in arm_rows(results, prefix, seeds, arms, "context_0"):
                seconds = sum(r["train_command_seconds"] for r in runs) / len(runs)
                lines.append(f"| {strategy} | {n} | {runs[0]['iterations']} | {describe(arm)} | {dice} | {delta} | "
                             f"{hd95:.2f} | {seconds:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--strategies", nargs="+", default=["decoder"],
                        help=f"of {', '.join(SCHEDULES)}; STRATEGY:ITERATIONS for another length")
    parser.add_argument("--counts", nargs="+", type=int, default=[5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help="context_N or fused_N; context_0 is the baseline")
    args = parser.parse_args()
    work, env, images, labels, out, results = open_work(args.work, "context_slices.json")
    for strategy in args.strategies:
        for n in args.counts:
            for seed in args.seeds:
                for arm in args.arms:
                    key = f"{strategy.replace(':', '-')}_n{n}_s{seed}_{arm}"
                    if key not in results:
                        results[key] = one_run(work, env, strategy, n, seed, arm, images, labels)
                        log(f"{key}: test Dice {results[key]['test']['mean']['Dice']:.3f}")
                        save(out, results)
    print(table(results, args.strategies, args.counts, args.seeds, args.arms))


if __name__ == "__main__":
    main()
