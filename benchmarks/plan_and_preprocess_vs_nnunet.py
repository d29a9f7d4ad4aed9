"""Benchmark: samunet_plan_and_preprocess against nnUNetv2_plan_and_preprocess -c 2d on the 200 MSD
hippocampus cases, same process count, same machine, one run. Records wall time, peak memory and ratios.

    pip install nnunetv2   # benchmark environment only; not a samunet dependency
    OMP_WAIT_POLICY=PASSIVE python benchmarks/plan_and_preprocess_vs_nnunet.py [-np 2] [--repeats 3]

The dataset is converted first (not timed). Each tool is timed from a fresh preprocessed folder; the
repeats alternate the two tools so that disk-cache and load effects hit both alike. Skips (exit 0) when
../shared/data is absent.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from measure import run_measured  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task04_Hippocampus"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-np", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    if shutil.which("nnUNetv2_plan_and_preprocess") is None:
        sys.exit("nnunetv2 is not installed: pip install nnunetv2 (benchmark environment only)")
    work = Path(args.work or tempfile.mkdtemp(prefix="samunet_bench_"))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env.update(
        SAMUNET_RAW=str(work / "raw"), SAMUNET_PREPROCESSED=str(work / "sam_pre"),
        nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "nn_pre"), nnUNet_results=str(work / "nn_res"),
    )
    if not (work / "raw" / "Dataset501_Hippocampus").is_dir():
        subprocess.run(["samunet_convert_msd", "-i", str(DATA), "-overwrite_id", "501"], env=env, check=True)
    if not (work / "raw" / "Dataset502_Hippocampus").is_dir():
        # nnU-Net's own MSD converter insists on an imagesTs folder, which this copy lacks; samunet's output
        # is nnU-Net v2 layout, so nnU-Net reads a copy of it.
        shutil.copytree(work / "raw" / "Dataset501_Hippocampus", work / "raw" / "Dataset502_Hippocampus")

    commands = {
        "samunet": ["samunet_plan_and_preprocess", "-d", "501", "-np", str(args.np)],
        "nnU-Net 2d": ["nnUNetv2_plan_and_preprocess", "-d", "502", "-c", "2d", "-np", str(args.np)],
    }
    outputs = {"samunet": work / "sam_pre", "nnU-Net 2d": work / "nn_pre"}
    results = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            shutil.rmtree(outputs[name], ignore_errors=True)
            seconds, peak, rc, out = run_measured(cmd, env)
            if rc != 0:
                sys.exit(f"{name} failed:\n{out[-3000:]}")
            results[name].append((seconds, peak))
    print(f"hippocampus, 200 cases, -np {args.np}, {args.repeats} repeats (median; all runs in brackets)")
    print("| tool | wall time (s) | peak memory (MiB) |")
    print("|---|---|---|")
    med = {}
    for name, runs in results.items():
        t = statistics.median(r[0] for r in runs)
        m = statistics.median(r[1] for r in runs)
        med[name] = (t, m)
        print(f"| {name} | {t:.1f} ({', '.join(f'{r[0]:.1f}' for r in runs)}) | {m:.0f} |")
    t_ratio = med["samunet"][0] / med["nnU-Net 2d"][0]
    m_ratio = med["samunet"][1] / med["nnU-Net 2d"][1]
    print(f"\nsamunet / nnU-Net: wall time {t_ratio:.2f}x, peak memory {m_ratio:.2f}x (target: time <= 0.5x)")


if __name__ == "__main__":
    main()
