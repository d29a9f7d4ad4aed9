"""Several channels into SAM's encoder: projected into its 3 input channels, or each encoded alone and
fused in the head (plan `encoder_input.channel_encoding`), on a 2-channel dataset made from hippocampus.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/channel_encoding.py --work /tmp/context

`--work`: a benchmarks/hippocampus.py work folder (its raw 501 dataset and fixed split). Dataset 503 is
made from it: channel 0 the MR image, channel 1 a second contrast simulated from it (intensities inverted
inside the head, as T2 against T1, with independent noise), for the training, validation and test cases
of the split. It is planned with the defaults (channels projected) and each run edits the plan's
`encoder_input`; the same `samunet_train` command (equal iterations, batch 8, seed) per arm; test cases
predicted from their raw 2-channel files with samunet_predict's defaults. The limit of this evidence:
channel 1 carries no information that channel 0 lacks, so it measures what each mapping costs the
encoder, not whether complementary channels are used (tests/test_encoder_input.py covers that on
phantoms). Writes WORK/channel_encoding.json and prints the markdown table.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import arm_rows, evaluate, log, open_work, run, save, split  # noqa: E402

DATASET = "Dataset503_HippocampusTwoChannels"
ARMS = ("projected", "separate")
EPOCHS, ITERATIONS = 20, 25


def make_dataset(work, cases):
    from samunet.dataset_conversion.dataset_writer import staged_dataset, write_dataset_json
    from samunet.imageio import read_image, write_image

    source = work / "raw" / "Dataset501_Hippocampus"
    if (work / "raw" / DATASET / "dataset.json").is_file():
        return work / "raw" / DATASET
    rng = np.random.default_rng(0)
    with staged_dataset(work / "raw", 503, "HippocampusTwoChannels") as folder:
        for case in cases:
            image, geometry = read_image(source / "imagesTr" / f"{case}_0000.nii.gz")
            image = image.astype(np.float32)
            inside = image > 0
            top = np.percentile(image[inside], 99.5)
            second = np.where(inside, np.clip(top - image, 0, None), 0)
            second += rng.normal(0, 0.05 * top, image.shape) * inside
            write_image(image, geometry, folder / "imagesTr" / f"{case}_0000.nii.gz")
            write_image(second.astype(np.float32), geometry, folder / "imagesTr" / f"{case}_0001.nii.gz")
            shutil.copyfile(source / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}.nii.gz")
        labels = json.loads((source / "dataset.json").read_text())["labels"]
        write_dataset_json(folder, {0: "MRI", 1: "MRI inverted"}, labels, len(cases), ".nii.gz",
                           name="HippocampusTwoChannels", description="MSD hippocampus + a simulated second contrast")
    return work / "raw" / DATASET


def use_encoding(pre, arm, val, pool):
    from samunet.models.input_mapping import EncoderInput

    path = pre / "samunet_plans.json"
    plan = json.loads(path.read_text())
    plan["encoder_input"].update(EncoderInput.default(2, channel_encoding=arm).fields())
    path.write_text(json.dumps(plan, indent=2))
    (pre / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--counts", nargs="+", type=int, default=[5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    args = parser.parse_args()
    work, env, _, labels, out, results = open_work(args.work, "channel_encoding.json")
    test, val, pool = split(work)
    raw = make_dataset(work, test + val + pool[: max(args.counts)])
    pool = pool[: max(args.counts)]
    run(["samunet_plan_and_preprocess", "-d", "503", "-np", "2"], env, work / "preprocess_503.log")
    pre = work / "sam_pre" / DATASET
    images = work / "test503"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    for case in test:
        for c in (0, 1):
            shutil.copyfile(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz", images / f"{case}_{c:04d}.nii.gz")
    for n in args.counts:
        for seed in args.seeds:
            for arm in ARMS:
                key = f"decoder_n{n}_s{seed}_{arm}"
                if key in results:
                    continue
                use_encoding(pre, arm, val, pool)
                folder = work / "runs503" / key
                shutil.rmtree(folder, ignore_errors=True)
                run_env = dict(env, SAMUNET_RESULTS=str(folder))
                seconds = run(["samunet_train", "503", "decoder", "0", "-b", "litemedsam", "--num-train-cases", str(n),
                               "--epochs", str(EPOCHS), "--iters-per-epoch", str(ITERATIONS), "--batch-size", "8",
                               "--val-slices", "20", "-np", "0", "--seed", str(seed)], run_env,
                              work / f"train503_{key}.log")
                preds = work / "preds503" / key
                shutil.rmtree(preds, ignore_errors=True)
                predict_seconds = run(["samunet_predict", "-i", images, "-o", preds, "-d", "503", "-s", "decoder",
                                       "-b", "litemedsam", "-f", "0", "-npp", "1", "-nps", "1"], run_env,
                                      work / f"predict503_{key}.log")
                results[key] = {"train_command_seconds": seconds, "iterations": EPOCHS * ITERATIONS,
                                "predict_seconds_per_case": predict_seconds / len(test),
                                "test": evaluate(labels, preds)}
                log(f"{key}: test Dice {results[key]['test']['mean']['Dice']:.3f}")
                save(out, results)
    lines = ["| labelled cases | channels into the encoder | test Dice: mean (per seed) | vs projected (points) | "
             "HD95 (mm) | train command (s) | predict (s / volume) |", "|---|---|---|---|---|---|---|"]
    for n in args.counts:
        for arm, runs, dice, hd95, delta in arm_rows(results, f"decoder_n{n}", args.seeds, ARMS, "projected"):
            train_s = sum(r["train_command_seconds"] for r in runs) / len(runs)
            predict_s = sum(r["predict_seconds_per_case"] for r in runs) / len(runs)
            lines.append(f"| {n} | {arm} | {dice} | {delta} | {hd95:.2f} | {train_s:.0f} | {predict_s:.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
