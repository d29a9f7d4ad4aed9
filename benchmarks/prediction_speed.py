"""Prediction speed: seconds per hippocampus volume for samunet (LiteMedSAM) and nnUNetv2_predict 2D, both
with and without test-time mirroring, on the same volumes, same machine, one run.

    pip install nnunetv2   # benchmark environment only
    OMP_WAIT_POLICY=PASSIVE python benchmarks/prediction_speed.py --work /tmp/bench1 [--cases 3]

Speed does not depend on what the weights are, so neither model is trained here: nnU-Net's 2D trainer
initialises its network and saves it as checkpoint_final.pth (what its own training would write), and
samunet saves an untrained LiteMedSAM `lora_both` checkpoint. nnU-Net runs twice per mode: with glibc's
default allocator settings and with the ones samunet applies to itself. `--work` must hold the planned and
preprocessed datasets from plan_and_preprocess_vs_nnunet.py (501 for samunet, 502 for nnU-Net).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from samunet.malloc_tuning import environment_settings


def nnunet_checkpoint(work):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args("502", "2d", 0, "nnUNetTrainer", "nnUNetPlans", device=torch.device("cpu"))
    trainer.initialize()
    os.makedirs(trainer.output_folder, exist_ok=True)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    for name, data in (("plans.json", trainer.plans_manager.plans), ("dataset.json", trainer.dataset_json)):
        import json

        Path(trainer.output_folder_base, name).write_text(json.dumps(data))


def samunet_checkpoint(work):
    from samunet.file_io import read_json
    from samunet.models.build import build_model
    from samunet.models.checkpoint import save_checkpoint
    from samunet.models.mirroring_record import MIRROR_AXES, MIRRORING_RECORD
    from samunet.trainers.trainer import copy_run_description

    pre = work / "sam_pre" / "Dataset501_Hippocampus"
    plan = read_json(pre / "samunet_plans.json")
    names = [n for n, v in sorted(plan["labels"].items(), key=lambda kv: kv[1]) if v]
    size = plan["backbones"]["litemedsam"]["input_size"]
    print(f"samunet: LiteMedSAM at input size {size} (the plan's)")
    model = build_model("litemedsam", "lora_both", len(names), input_size=size, class_names=names)
    model.metadata[MIRRORING_RECORD] = list(MIRROR_AXES)  # as lora_both training with augmentation records
    conf = work / "sam_res" / "Dataset501_Hippocampus" / "lora_both__litemedsam"
    copy_run_description(pre, conf)
    save_checkpoint(conf / "fold_0" / "checkpoint_final.pth", model)


def timed(cmd, env):
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{cmd[0]} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--cases", type=int, default=3)
    args = parser.parse_args()
    work = Path(args.work)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", SAMUNET_RAW=str(work / "raw"),
               SAMUNET_PREPROCESSED=str(work / "sam_pre"), SAMUNET_RESULTS=str(work / "sam_res"),
               nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "nn_pre"),
               nnUNet_results=str(work / "nn_res"))
    os.environ.update(env)
    nnunet_checkpoint(work)
    samunet_checkpoint(work)
    inputs = work / "predict_inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir()
    for p in sorted((work / "raw" / "Dataset501_Hippocampus" / "imagesTr").glob("*_0000.nii.gz"))[: args.cases]:
        shutil.copyfile(p, inputs / p.name)
    samunet = ["samunet_predict", "-i", str(inputs), "-d", "501", "-s", "lora_both", "-b", "litemedsam",
               "-npp", "1", "-nps", "1"]
    nnunet = ["nnUNetv2_predict", "-i", str(inputs), "-d", "502", "-c", "2d", "-f", "0", "-device", "cpu",
              "-npp", "1", "-nps", "1"]
    # samunet commands tune glibc's malloc themselves (samunet/malloc_tuning.py); nnU-Net is also run
    # with the same settings through glibc's environment variables, so that the comparison is like for like.
    tuned = environment_settings()
    runs = {
        "samunet LiteMedSAM, no TTA": (samunet + ["--disable-tta"], {}),
        "nnU-Net 2d, no TTA": (nnunet + ["--disable_tta"], {}),
        "nnU-Net 2d (tuned malloc), no TTA": (nnunet + ["--disable_tta"], tuned),
        "samunet LiteMedSAM, TTA": (samunet, {}),
        "nnU-Net 2d, TTA": (nnunet, {}),
        "nnU-Net 2d (tuned malloc), TTA": (nnunet, tuned),
    }
    seconds = {}
    for i, (name, (cmd, extra_env)) in enumerate(runs.items()):
        output = work / f"p{i + 1}"
        shutil.rmtree(output, ignore_errors=True)
        seconds[name] = timed(cmd + ["-o", str(output)], {**env, **extra_env}) / args.cases
        print(f"{name}: {seconds[name]:.1f} s per volume", flush=True)
    for mode in ("no TTA", "TTA"):
        ours = seconds[f"samunet LiteMedSAM, {mode}"]
        theirs = min(seconds[f"nnU-Net 2d, {mode}"], seconds[f"nnU-Net 2d (tuned malloc), {mode}"])
        print(f"{mode}: samunet / faster nnU-Net = {ours / theirs:.1f}x (goal: within 3x)")


if __name__ == "__main__":
    main()
