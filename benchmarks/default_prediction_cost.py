"""Default prediction cost: samunet_predict with its defaults against nnUNetv2_predict 2D (mirroring on, its
default) on the same hippocampus volumes, in one command each, same machine, one script.

    pip install nnunetv2   # benchmark environment only (e.g. a venv with --system-site-packages)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/default_prediction_cost.py --work /tmp/context \
        --model /tmp/context/runs/decoder_n5_s1_fused_1 --strategy decoder

`--work`: a benchmarks/hippocampus.py work folder (its raw 501 dataset and test cases; nnU-Net's 502 copy
is converted and planned here when missing). `--model`: a SAMUNET_RESULTS folder holding a trained
`STRATEGY__litemedsam` fold 0 (prediction cost does not depend on how long it trained). nnU-Net's time does
not depend on its weights either, so its 2D network is initialised and saved untrained, as its training
would save it. Volumes: the 8 test cases, then 20 (the 8 and the first 12 pool cases), each set in one
command per tool; both tools with 1 preprocessing and 1 export process (2 cores).
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import environment, log, save, set_up, split  # noqa: E402
from prediction_speed import nnunet_checkpoint, timed  # noqa: E402


def inputs_of(work, cases, name):
    folder = work / "cost_inputs" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for case in cases:
        shutil.copyfile(work / "raw" / "Dataset501_Hippocampus" / "imagesTr" / f"{case}_0000.nii.gz",
                        folder / f"{case}_0000.nii.gz")
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a SAMUNET_RESULTS folder")
    parser.add_argument("--strategy", default="decoder")
    args = parser.parse_args()
    work = args.work.resolve()
    env = dict(environment(work), nnUNet_results=str(work / "nn_res"))
    set_up(work, env, nnunet=True)
    os.environ.update(env)
    nnunet_checkpoint(work)
    test, _, pool = split(work)
    sets = {"8 test volumes": test, "20 volumes": test + pool[:12]}
    results = {}
    for label, cases in sets.items():
        inputs = inputs_of(work, cases, label.split()[0])
        samunet = ["samunet_predict", "-i", str(inputs), "-o", str(work / "cost_samunet"), "-d", "501",
                   "-s", args.strategy, "-b", "litemedsam", "-f", "0", "-npp", "1", "-nps", "1"]
        nnunet = ["nnUNetv2_predict", "-i", str(inputs), "-o", str(work / "cost_nnunet"), "-d", "502", "-c", "2d",
                  "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"]
        for out in ("cost_samunet", "cost_nnunet"):
            shutil.rmtree(work / out, ignore_errors=True)
        ours = timed(samunet, dict(env, SAMUNET_RESULTS=str(args.model.resolve()))) / len(cases)
        theirs = timed(nnunet, env) / len(cases)
        results[label] = {"samunet_s_per_volume": ours, "nnunet_s_per_volume": theirs, "ratio": ours / theirs}
        log(f"| {label} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f}x |")
    save(work / "default_prediction_cost.json", {"model": str(args.model), "strategy": args.strategy,
                                                 "when": time.strftime("%Y-%m-%d"), **results})


if __name__ == "__main__":
    main()
