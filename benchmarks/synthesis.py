"""Does exemplar-guided synthesis (samunet_synthesize / samunet_train --synthesis) help few-label training?

    OMP_WAIT_POLICY=PASSIVE python benchmarks/synthesis.py --work /tmp/synthesis

Hippocampus, the fixed split of benchmarks/hippocampus.py (8 test cases, 1 validation case, a pool of 191):
the first 1 and 5 pool cases are the labelled exemplars, the other pool cases the unlabelled images (their
labels unused; test and validation cases are never synthesis targets). For each count:
- `multi_atlas`: the classical baseline, registration alone. The exemplars are registered to each test
  image with the `registration` method's own code and their labels fused; the result, restored to the
  raw geometry, is the segmentation.
- each strategy fine-tuned without synthesis and with it (samunet_synthesize's defaults; the set is
  made once per count and method, and its wall time reported), with the same number of iterations
  (a fixed budget that background load cannot shift between the arms) and each seed; the test cases
  are predicted from their raw files with samunet_predict's defaults.
Arms are `none`, `<method>` (default --synthetic-fraction) and `<method>@<fraction>`.
Writes WORK/synthesis.json (runs it already holds are reused) and prints the table.
"""
import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, environment, evaluate, log, run, schedule, set_up, split  # noqa: E402

SCHEDULES = {"decoder": (20, 25), "lora_both": (25, 10)}  # (epochs, iterations per epoch), batch 8
COUNTS = (1, 5)
DATASET = "Dataset501_Hippocampus"


def write_split(work):
    _, val, pool = split(work)
    pre = work / "sam_pre" / DATASET
    splits = json.dumps([{"train": pool, "val": val}])
    if (pre / "splits_final.json").read_text() != splits:  # written once: later runs only read it
        (pre / "splits_final.json").write_text(splits)


def synthesize(work, env, n, method):
    """The synthetic set, made once: wall time of the command and the set's own cost record."""
    folder = work / "sam_pre" / DATASET / "synthetic_samunet_2d" / f"{method}_fold0_n{n}"
    seconds = run(["samunet_synthesize", "501", "-f", "0", "--num-train-cases", str(n), "--method", method, "-np", "2"],
                  env, work / f"synthesize_{method}_n{n}.log")
    description = json.loads((folder / "synthesis.json").read_text())
    return {"command_seconds": seconds, "cases": description["num_cases"], "used": description["num_used"],
            "cost": description.get("cost")}


def label_accuracy(work, n, method):
    """How right the synthetic labels are: each against the real label of its source case (read here, by
    the benchmark, never by synthesis), and how well the quality score (and agreement) predicts that."""
    from samunet.preprocessing.storage import load_case
    from samunet.synthesis.label_fusion import foreground_dice

    pre = work / "sam_pre" / DATASET
    folder = pre / "synthetic_samunet_2d" / f"{method}_fold0_n{n}"
    cases = json.loads((folder / "synthesis.json").read_text())["cases"]
    dice, quality, agreement, used = [], [], [], []
    for case_id, info in cases.items():
        _, seg, props = load_case(folder, case_id)
        _, truth, _ = load_case(pre / "samunet_2d", info["target"].removeprefix("Tr_"))
        dice.append(foreground_dice(seg, truth))
        quality.append(info["quality"])
        agreement.append(props["synthesis"].get("agreement", np.nan))
        used.append(info["weight"] > 0)
    dice, used = np.array(dice), np.array(used)
    result = {"mean_dice": float(dice.mean()), "mean_dice_used": float(dice[used].mean()),
              "mean_dice_dropped": float(dice[~used].mean()) if (~used).any() else None,
              "quality_vs_dice_r": float(np.corrcoef(quality, dice)[0, 1])}
    if not np.isnan(agreement).all():
        result["agreement_vs_dice_r"] = float(np.corrcoef(agreement, dice)[0, 1])
    return result


def fusion_comparison(work, n, sample):
    """Majority vote against STAPLE on every k-th synthesis target: Dice of the fused label with the real one."""
    from samunet.preprocessing.storage import load_case
    from samunet.synthesis.label_fusion import foreground_dice
    from samunet.synthesis.methods import registration
    from samunet.synthesis.volumes import Volume

    data_folder = work / "sam_pre" / DATASET / "samunet_2d"
    _, _, pool = split(work)
    volumes = {}
    for case_id in pool[: n] + pool[n :: max(1, (len(pool) - n) // sample)][:sample]:
        data, seg, props = load_case(data_folder, case_id)
        volumes[case_id] = (Volume(case_id, data, tuple(props["spacing_after_resampling"]), seg), seg)
    exemplars = [volumes[c][0] for c in pool[:n]]
    scores = {"majority": [], "staple": []}
    for case_id in list(volumes)[n:]:
        target, truth = volumes[case_id]
        target = Volume(case_id, target.image, target.spacing)
        for rule in scores:
            scores[rule].append(foreground_dice(registration.synthesize(target, exemplars, None, {"fusion": rule}).seg, truth))
    return {rule: float(np.mean(v)) for rule, v in scores.items()} | {"cases": len(scores["majority"])}


def multi_atlas(work, n, images, labels):
    """Registration of the n exemplars to each test image, fused: the segmentation without any training."""
    from samunet.inference.write_prediction import restore_and_write
    from samunet.preprocessing.storage import load_case, open_case
    from samunet.synthesis.methods import registration
    from samunet.synthesis.volumes import Volume

    data_folder = work / "sam_pre" / DATASET / "samunet_2d"
    _, _, pool = split(work)
    exemplars = []
    for case_id in pool[:n]:
        data, seg, props = load_case(data_folder, case_id)
        exemplars.append(Volume(case_id, data, tuple(props["spacing_after_resampling"]), seg))
    out = work / "preds" / f"multi_atlas_n{n}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    test_ids = [p.name[: -len("_0000.nii.gz")] for p in sorted(images.iterdir())]
    for case_id in test_ids:
        data, _, props = open_case(data_folder, case_id)  # the preprocessed image; its label is not read
        image = Volume(case_id, data[...], tuple(props["spacing_after_resampling"]))
        seg = registration.synthesize(image, exemplars, None, {}).seg
        probs = np.stack([(seg == c) for c in range(3)]).astype(np.float32)
        restore_and_write(case_id, probs, props, out, ".nii.gz")
    return {"seconds_per_case": (time.perf_counter() - start) / len(test_ids), "test": evaluate(labels, out)}


def fine_tune(work, env, spec, n, seed, arm, images, labels):
    strategy, epochs, iters = schedule(spec, SCHEDULES)
    tag = f"{spec.replace(':', '-')}_n{n}_s{seed}_{arm}"
    results = work / "runs" / tag
    shutil.rmtree(results, ignore_errors=True)
    flags = []
    if arm != "none":
        method, _, fraction = arm.partition("@")
        flags = ["--synthesis", method] + (["--synthetic-fraction", fraction] if fraction else [])
    run_env = dict(env, SAMUNET_RESULTS=str(results))
    train_seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                         "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "8",
                         "--val-slices", "20", "-np", "0", "--seed", str(seed), *flags], run_env,
                        work / f"train_{tag}.log")
    preds = work / "preds" / tag
    shutil.rmtree(preds, ignore_errors=True)
    run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", strategy, "-b", "litemedsam", "-f", "0",
         "-npp", "1", "-nps", "1"], run_env, work / f"predict_{tag}.log")
    return {"train_command_seconds": train_seconds, "iterations": epochs * iters, "test": evaluate(labels, preds)}


def table(results, strategies, seeds, arms):
    lines = ["| rows | labelled cases | synthesis | test Dice: mean (per seed) | vs none (points) | HD95 (mm) | "
             "training (s) | synthesis (s) | all-inclusive (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for n in COUNTS:
        atlas = results.get(f"multi_atlas_n{n}")
        if atlas:
            lines.append(f"| multi-atlas registration | {n} | registration alone | {atlas['test']['mean']['Dice']:.3f} | | "
                         f"{atlas['test']['mean']['HD95']:.2f} | none | {atlas['seconds_per_case']:.1f} per test case | |")
        for strategy in strategies:
            prefix = f"{strategy.replace(':', '-')}_n{n}"
            for arm, runs, dice, hd95, delta in arm_rows(results, prefix, seeds, arms, "none"):
                train = sum(r["train_command_seconds"] for r in runs) / len(runs)
                made = results.get(f"set_{arm.partition('@')[0]}_n{n}")
                synth = made["command_seconds"] if made else 0.0
                lines.append(f"| {strategy} | {n} | {arm} | {dice} | {delta} | {hd95:.2f} | {train:.0f} | {synth:.0f} | "
                             f"{train + synth:.0f} |")
    return "\n".join(lines)


def save(out, results):
    out.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
    os.replace(out.with_suffix(".tmp"), out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--strategies", nargs="+", default=list(SCHEDULES),
                        help="STRATEGY, or STRATEGY:ITERATIONS for another length than SCHEDULES'")
    parser.add_argument("--arms", nargs="+", default=["none", "registration"],
                        help="none, a method (default fraction) or METHOD@FRACTION")
    parser.add_argument("--counts", nargs="+", type=int, default=list(COUNTS), help="labelled cases per row")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--fusion-sample", type=int, default=30,
                        help="targets on which majority voting and STAPLE are compared (0: skip)")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet=False)
    write_split(work)
    out = work / "synthesis.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for n in COUNTS:
        if f"multi_atlas_n{n}" not in results:
            results[f"multi_atlas_n{n}"] = multi_atlas(work, n, images, labels)
            log(f"multi-atlas n{n}: test Dice {results[f'multi_atlas_n{n}']['test']['mean']['Dice']:.3f}")
            save(out, results)
        for method in sorted({a.partition("@")[0] for a in args.arms} - {"none"}):
            if f"set_{method}_n{n}" not in results:
                results[f"set_{method}_n{n}"] = synthesize(work, env, n, method)
                log(f"synthetic set {method} n{n}: {results[f'set_{method}_n{n}']}")
                save(out, results)
            if "label_accuracy" not in results[f"set_{method}_n{n}"]:
                results[f"set_{method}_n{n}"]["label_accuracy"] = label_accuracy(work, n, method)
                log(f"synthetic labels {method} n{n}: {results[f'set_{method}_n{n}']['label_accuracy']}")
                save(out, results)
    if args.fusion_sample and "fusion_n5" not in results:
        results["fusion_n5"] = fusion_comparison(work, 5, args.fusion_sample)
        log(f"fusion rules, 5 exemplars: {results['fusion_n5']}")
        save(out, results)
    for strategy in args.strategies:
        for n in args.counts:
            for seed in args.seeds:
                for arm in args.arms:
                    tag = f"{strategy.replace(':', '-')}_n{n}_s{seed}_{arm}"
                    if tag not in results:
                        results[tag] = fine_tune(work, env, strategy, n, seed, arm, images, labels)
                        log(f"{tag}: test Dice {results[tag]['test']['mean']['Dice']:.3f}")
                        save(out, results)
    arms = list(dict.fromkeys(["none", *args.arms]))
    print(table(results, args.strategies, args.seeds, arms))


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
