"""Cost and accuracy of test-time mirroring: every slice against only slices near predicted foreground.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/mirroring_cost.py --work /tmp/context

Uses models benchmarks/context_slices.py trained (WORK/runs/<run>/, default the `lora_both` runs: a
strategy whose training mirrors, so prediction mirrors) and its 8 test volumes. Each model predicts them
three times in one process each (samunet_predict, one command per setting): --disable-tta (one pass),
the default (mirrored passes on slices within MIRROR_NEIGHBOURS of the un-mirrored pass's foreground) and
--tta-all-slices (every slice mirrored: the former default). Reports seconds per volume (the command's
wall time over the volumes, start-up included) and test Dice of each. Writes WORK/mirroring_cost.json.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import environment, evaluate, log, run  # noqa: E402

SETTINGS = {"no_tta": ["--disable-tta"], "near_foreground": [], "all_slices": ["--tta-all-slices"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", default=None, help="run folders under WORK/runs (default: lora_both_*)")
    args = parser.parse_args()
    work = args.work.resolve()
    env = environment(work)
    images, labels = work / "test" / "imagesTs", work / "test" / "labelsTs"
    runs = args.runs or sorted(p.name for p in (work / "runs").glob("lora_both_*"))
    results = {}
    for name in runs:
        run_env = dict(env, SAMUNET_RESULTS=str(work / "runs" / name))
        for setting, flags in SETTINGS.items():
            preds = work / "preds_mirroring" / name / setting
            shutil.rmtree(preds, ignore_errors=True)
            seconds = run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", "lora_both", "-b",
                           "litemedsam", "-f", "0", "-npp", "1", "-nps", "1", *flags], run_env,
                          work / f"mirroring_{name}_{setting}.log")
            results[f"{name}_{setting}"] = {"seconds_per_volume": seconds / len(os.listdir(images)),
                                            "test": evaluate(labels, preds)}
            log(f"{name} {setting}: {results[f'{name}_{setting}']['seconds_per_volume']:.2f} s/volume, "
                f"Dice {results[f'{name}_{setting}']['test']['mean']['Dice']:.4f}")
    (work / "mirroring_cost.json").write_text(json.dumps(results, indent=1))
    print("| model | mirroring | s / volume | vs every slice | test Dice | HD95 (mm) |\n|---|---|---|---|---|---|")
    for name in runs:
        base = results[f"{name}_all_slices"]["seconds_per_volume"]
        for setting in SETTINGS:
            r = results[f"{name}_{setting}"]
            print(f"| {name} | {setting} | {r['seconds_per_volume']:.2f} | {r['seconds_per_volume'] / base:.2f}x | "
                  f"{r['test']['mean']['Dice']:.4f} | {r['test']['mean']['HD95']:.2f} |")


if __name__ == "__main__":
    main()
