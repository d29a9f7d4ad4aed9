"""DDP on CPU with the gloo backend and 2 processes, launched by torchrun as users would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from training_helpers import prepare_dataset

PROBE = Path(__file__).with_name("ddp_gradient_probe.py")


def torchrun(args, env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_ddp_matches_single_process_gradient_and_trains(make_dataset, env, tmp_path):
    folder = prepare_dataset(make_dataset, env)
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROBE.parent.parent))
    torchrun([str(PROBE), str(folder), str(tmp_path / "ddp.pt")], run_env)
    single = subprocess.run([sys.executable, str(PROBE), str(folder), str(tmp_path / "single.pt")], env=run_env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp, ref = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    assert set(ddp) == set(ref) and len(ref) > 0
    for name in ref:
        torch.testing.assert_close(ddp[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)

    # prompted: each rank decodes its own prompt groups (and none when its slices hold no foreground)
    torchrun(["-m", "samunet.run_training", "990", "lora_both", "0", "-b", "tiny", "--epochs", "1",
              "--iters-per-epoch", "2", "--batch-size", "4", "-np", "0", "--val-slices", "4", "--prompts", "box+point"],
             run_env)
    fold = env.results / "Dataset990_Synthetic" / "lora_both__tiny__prompts-box-point" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "training_log.txt").read_text().count("epoch 0: train loss") == 1  # rank 0 logs alone


def test_ddp_pretraining_runs_and_rank_0_alone_writes(make_dataset, env):
    prepare_dataset(make_dataset, env)
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROBE.parent.parent))
    torchrun(["-m", "samunet.pretraining.pretrain_cli", "990", "-b", "tiny", "--epochs", "2", "--iters-per-epoch",
              "2", "--batch-size", "4", "--amp", "off", "-np", "1"], run_env)
    folder = env.results / "Dataset990_Synthetic" / "pretrained" / "mae_full"
    assert (folder / "encoder.json").is_file() and (folder / "encoder.pth").is_file()
    log = (folder / "training_log.txt").read_text()
    assert log.count("epoch 1: masked reconstruction loss") == 1  # rank 0 logs alone


def test_ddp_training_with_synthesis_makes_the_set_once(make_dataset, env):
    prepare_dataset(make_dataset, env, num_cases=6)
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROBE.parent.parent))
    result = torchrun(["-m", "samunet.run_training", "990", "decoder", "0", "-b", "tiny", "--epochs", "1",
                       "--iters-per-epoch", "2", "--batch-size", "4", "-np", "0", "--val-slices", "4",
                       "--num-train-cases", "2", "--synthesis"], run_env)
    dataset = "Dataset990_Synthetic"
    description = json.loads((env.preprocessed / dataset / "synthetic_samunet_2d" / "registration_fold0_n2" /
                              "synthesis.json").read_text())
    # both ranks ask for the set under its lock: one makes every case, the other finds them current (and
    # keeps the maker's cost record); rank 0 alone reports
    assert description["cost"]["cases"] == description["num_cases"] > 0
    assert result.stdout.count("newly made)") == 1
    fold = env.results / dataset / "decoder__tiny" / "fold_0"
    metadata = json.loads((fold / "checkpoint_final.json").read_text())
    assert metadata["synthesis"]["synthetic_cases"] == description["num_used"]
    assert (fold / "training_log.txt").read_text().count("epoch 0: train loss") == 1
