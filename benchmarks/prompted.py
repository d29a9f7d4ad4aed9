"""Prompted fine-tuning and prediction (samunet_train --prompts, samunet_predict --prompts) on hippocampus.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/prompted.py --work /tmp/prompted

The fixed split of benchmarks/hippocampus.py (8 test cases, 1 validation case, a pool of 191; "n cases"
are the first n of the pool). Test prompts: `samunet_make_prompts` on the test labels with its defaults
(per slice and class a box jittered as training jitters; provenance ground_truth). Rows, each predicted
from the raw test images with samunet_predict's defaults and evaluated in mm:
- `zero_shot`: LiteMedSAM as released (a prompted `decoder` model saved untrained: its single-mask token
  and decoder are the pretrained ones), prompted with the test prompts;
- per strategy, case count and seed, with the same number of training iterations:
  `prompt_free` (samunet_train without prompts; provenance none), `prompted` (--prompts box, predicted
  with the test prompts: ground_truth), `auto` (the same prompted model, --prompts auto: its own
  prompt-free result prompts it; provenance model), `refine` (the same prompted model prompted by the
  prompt-free model's predictions, a folder samunet_predict wrote: provenance model) and `own_prompt_free`
  (the prompted model without prompts).
Writes WORK/prompted.json (runs and arms it holds are reused; a trained model whose arms are missing is
predicted again without retraining) and prints the markdown table.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, evaluate, log, open_work, run, save, schedule, split  # noqa: E402

SCHEDULES = {"decoder": (20, 25), "lora_both": (25, 10)}  # (epochs, iterations per epoch), batch 8
DATASET = "Dataset501_Hippocampus"
ARMS = ("prompt_free", "prompted", "auto", "refine", "own_prompt_free")


def write_split(work):
    _, val, pool = split(work)
    path = work / "sam_pre" / DATASET / "splits_final.json"
    splits = json.dumps([{"train": pool, "val": val}])
    if not path.is_file() or path.read_text() != splits:
        path.write_text(splits)


def predict(work, env, name, images, labels, flags, command="samunet_predict"):
    preds = work / "preds" / name
    shutil.rmtree(preds, ignore_errors=True)
    seconds = run([command, "-i", images, "-o", preds, "-npp", "1", "-nps", "1", *flags], env,
                  work / f"predict_{name}.log")
    info = json.loads((preds / "prediction_info.json").read_text())
    return {"test": evaluate(labels, preds), "provenance": info["prompts"]["provenance"],
            "predict_seconds_per_case": seconds / len(os.listdir(images))}


def zero_shot(work, env, images, labels, prompts):
    """LiteMedSAM as released, behind samunet's prompted prediction: an untrained prompted model."""
    from dataclasses import asdict

    from samunet.file_io import read_json
    from samunet.models.build import build_model
    from samunet.models.checkpoint import save_checkpoint
    from samunet.prompts.derivation import PromptRule

    pre = work / "sam_pre" / DATASET
    plan = read_json(pre / "samunet_plans.json")
    results = work / "runs" / "zero_shot"
    folder = results / DATASET / "decoder__litemedsam__prompts-box"
    classes = [n for n, v in sorted(plan["labels"].items(), key=lambda kv: kv[1]) if v]
    model = build_model("litemedsam", "decoder", len(classes), plan["backbones"]["litemedsam"]["input_size"],
                        class_names=classes, prompts=asdict(PromptRule("box")))
    model.metadata["mirroring_axes"] = []
    save_checkpoint(folder / "fold_0" / "checkpoint_final.pth", model)
    for name in ("samunet_plans.json", "dataset.json"):
        shutil.copyfile(pre / name, folder / name)
    return predict(work, dict(env, SAMUNET_RESULTS=str(results)), "zero_shot", images, labels,
                   ["-d", "501", "--prompts", prompts])


def fine_tune(work, env, spec, n, seed, prompted, results):
    """Train one model, or reuse the one `results` records as trained (key `trained_{tag}`)."""
    strategy, epochs, iters = schedule(spec, SCHEDULES)
    tag = f"{spec.replace(':', '-')}_n{n}_s{seed}_{'prompted' if prompted else 'prompt_free'}"
    folder = work / "runs" / tag
    run_env = dict(env, SAMUNET_RESULTS=str(folder))
    if f"trained_{tag}" in results:
        return tag, run_env, results[f"trained_{tag}"]
    shutil.rmtree(folder, ignore_errors=True)
    flags = ["--prompts", "box"] if prompted else []
    seconds = run(["samunet_train", "501", strategy, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                   "--epochs", str(epochs), "--iters-per-epoch", str(iters), "--batch-size", "8", "--val-slices", "20",
                   "-np", "0", "--seed", str(seed), *flags], run_env, work / f"train_{tag}.log")
    results[f"trained_{tag}"] = {"train_command_seconds": seconds, "iterations": epochs * iters}
    return tag, run_env, results[f"trained_{tag}"]


def table(results, strategies, counts):
    # Timings stay in the JSON: the runs shared the 2 cores with other work, so they are not in the table.
    lines = ["| model | labelled cases | training iterations | prompts at test | provenance | test Dice: mean (per seed) "
             "| vs prompt_free (points) | HD95 (mm) |", "|---|---|---|---|---|---|---|---|"]
    zero = results.get("zero_shot")
    if zero:
        lines.append(f"| LiteMedSAM zero-shot | 0 | 0 | jittered reference boxes | {zero['provenance']} | "
                     f"{zero['test']['mean']['Dice']:.3f} | | {zero['test']['mean']['HD95']:.2f} |")
    how = {"prompt_free": "none", "prompted": "jittered reference boxes", "auto": "auto (own first pass)",
           "refine": "the prompt-free model's masks", "own_prompt_free": "none (prompted model)"}
    for strategy in strategies:
        for n in counts:
            prefix = f"{strategy.replace(':', '-')}_n{n}"
            seeds = sorted(int(k[len(prefix) + 2:].split("_")[0]) for k in results
                           if k.startswith(f"{prefix}_s") and k.endswith("_prompt_free") and "own" not in k)
            for arm, runs, dice, hd95, delta in arm_rows(results, prefix, seeds, ARMS, "prompt_free"):
                model = f"{strategy} {'prompt-free' if arm == 'prompt_free' else 'prompted (box)'}"
                lines.append(f"| {model} | {n} | {runs[0]['iterations']} | {how[arm]} | {runs[0]['provenance']} | {dice} "
                             f"| {delta} | {hd95:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--strategies", nargs="+", default=list(SCHEDULES),
                        help="STRATEGY, or STRATEGY:ITERATIONS for another length than SCHEDULES'")
    parser.add_argument("--counts", nargs="+", type=int, default=[1, 5, 191])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    work, env, images, labels, out, results = open_work(args.work, "prompted.json")
    write_split(work)
    prompts = work / "test_prompts.json"
    if not prompts.is_file():
        run(["samunet_make_prompts", labels, "-o", prompts], env, work / "make_prompts.log")
    if "zero_shot" not in results:
        results["zero_shot"] = zero_shot(work, env, images, labels, prompts)
        log(f"zero-shot: test Dice {results['zero_shot']['test']['mean']['Dice']:.3f}")
        save(out, results)
    for strategy in args.strategies:
        for n in args.counts:
            for seed in args.seeds:
                prefix = f"{strategy.replace(':', '-')}_n{n}_s{seed}"
                base = ["-d", "501", "-s", schedule(strategy, SCHEDULES)[0], "-b", "litemedsam", "-f", "0"]
                if f"{prefix}_prompt_free" not in results:
                    tag, run_env, trained = fine_tune(work, env, strategy, n, seed, False, results)
                    results[tag] = trained | predict(work, run_env, tag, images, labels, base)
                    log(f"{tag}: test Dice {results[tag]['test']['mean']['Dice']:.3f}")
                    save(out, results)
                tag, run_env, trained = fine_tune(work, env, strategy, n, seed, True, results)
                save(out, results)
                folder = work / "runs" / tag / DATASET / f"{schedule(strategy, SCHEDULES)[0]}__litemedsam__prompts-box"
                for arm, flags, command in (
                        ("prompted", base + ["--prompts", prompts], "samunet_predict"),
                        ("auto", base + ["--prompts", "auto"], "samunet_predict"),
                        ("refine", base + ["--prompts", work / "preds" / f"{prefix}_prompt_free"], "samunet_predict"),
                        ("own_prompt_free", ["-m", folder, "-f", "0"], "samunet_predict_from_modelfolder")):
                    if f"{prefix}_{arm}" not in results:
                        results[f"{prefix}_{arm}"] = trained | predict(work, run_env, f"{prefix}_{arm}", images,
                                                                       labels, flags, command)
                        log(f"{prefix}_{arm}: test Dice {results[f'{prefix}_{arm}']['test']['mean']['Dice']:.3f}")
                        save(out, results)
    print(table(results, args.strategies, args.counts))


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
