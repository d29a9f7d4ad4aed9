"""Hippocampus benchmark: samunet strategies on LiteMedSAM against nnU-Net 2D under the same wall-clock
training budget on this machine, with 1, 5 and all training cases (label efficiency).

    pip install nnunetv2   # benchmark environment only
    OMP_WAIT_POLICY=PASSIVE python benchmarks/hippocampus.py --work /tmp/hippo --budget-minutes 4

Fixed split of the 200 MSD Task04 cases in ../shared/data (sorted case ids): every 25th case from the
first is a test case (8), the second case is the validation case both tools watch during training, and
the other 191 form the training pool; "n cases" are the first n of the pool. Each run gets the same
wall-clock budget from the construction of its trainer (model building, data loaders, the embedding cache
fill from a cold cache, epochs and per-epoch validation all count); both tools stop at the last whole epoch
that fits and fit their LR decay to it. Test cases are then predicted from their raw files with each tool's
default settings (samunet_predict mirrors along the axes its training mirrored; nnU-Net mirrors with its
default axes) and evaluated by the same code (samunet's, Dice and HD95 in mm).
Writes WORK/hippocampus_<budget>min.json and docs/hippocampus_benchmark_<budget>min.png; prints the
markdown table.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from samunet.malloc_tuning import environment_settings

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
SAMUNET_METHODS = ("decoder", "autosam", "lora_both")
CACHED = {"decoder", "autosam"}
LABELS = {1: "Anterior", 2: "Posterior"}


def log(message):
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def run(cmd, env, log_file):
    start = time.perf_counter()
    with open(log_file, "w") as out:
        result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed, see {log_file}")
    return time.perf_counter() - start


def environment(work):
    # samunet's allocator settings (samunet/malloc_tuning.py) for every process, nnU-Net's included
    return dict(os.environ, **environment_settings(), OMP_WAIT_POLICY="PASSIVE", SAMUNET_RAW=str(work / "raw"),
                SAMUNET_PREPROCESSED=str(work / "sam_pre"), nnUNet_raw=str(work / "raw"),
                nnUNet_preprocessed=str(work / "nn_pre"), nnUNet_n_proc_DA="2")


def split(work):
    ids = sorted(p.name[: -len(".nii.gz")] for p in (work / "raw" / "Dataset501_Hippocampus" / "labelsTr").glob("*.nii.gz"))
    test = ids[::25]
    val = [ids[1]]
    pool = [c for c in ids if c not in test and c not in val]
    return test, val, pool


def set_up(work, env, nnunet=True):
    """Convert once (samunet 501, and 502 = the same files for nnU-Net), plan and preprocess both (nnU-Net
    only with `nnunet`), and copy the test cases out as a user would have them."""
    raw = work / "raw"
    if not (raw / "Dataset501_Hippocampus" / "dataset.json").is_file():
        raw.mkdir(parents=True, exist_ok=True)
        run(["samunet_convert_msd", "-i", DATA, "-overwrite_id", "501", "-np", "2"], env, work / "convert.log")
    nn_raw = raw / "Dataset502_Hippocampus"
    if nnunet and not (nn_raw / "dataset.json").is_file():
        shutil.copytree(raw / "Dataset501_Hippocampus", nn_raw)
    run(["samunet_plan_and_preprocess", "-d", "501", "-np", "2"], env, work / "samunet_preprocess.log")
    if nnunet and not (work / "nn_pre" / "Dataset502_Hippocampus" / "nnUNetPlans_2d").is_dir():
        run(["nnUNetv2_plan_and_preprocess", "-d", "502", "-c", "2d", "-np", "2"], env, work / "nnunet_preprocess.log")
    test, _, _ = split(work)
    images, labels = work / "test" / "imagesTs", work / "test" / "labelsTs"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case_id in test:
        shutil.copyfile(raw / "Dataset501_Hippocampus" / "imagesTr" / f"{case_id}_0000.nii.gz", images / f"{case_id}_0000.nii.gz")
        shutil.copyfile(raw / "Dataset501_Hippocampus" / "labelsTr" / f"{case_id}.nii.gz", labels / f"{case_id}.nii.gz")
    return images, labels


def open_work(work, results_name):
    """For the scripts that train samunet only: WORK set up (converted, planned, preprocessed, the test
    cases copied out) and the script's results file -> (work, env, images, labels, results path, results)."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet=False)
    out = work / results_name
    return work, env, images, labels, out, json.loads(out.read_text()) if out.is_file() else {}


def save(out, results):
    out.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
    os.replace(out.with_suffix(".tmp"), out)


def evaluate(labels, predictions):
    from samunet.evaluation.evaluate_cli import evaluate_folders

    summary = evaluate_folders(labels, predictions, sorted(LABELS), num_processes=2)
    return {name: {"Dice": summary["mean"][str(v)]["Dice"], "HD95": summary["mean"][str(v)]["HD95"]}
            for v, name in LABELS.items()} | {"mean": {k: summary["foreground_mean"][k] for k in ("Dice", "HD95")}}


def schedule(spec, schedules):
    """`strategy` or `strategy:ITERATIONS` -> (strategy, epochs, iterations per epoch), from the script's
    {strategy: (epochs, iterations per epoch)}."""
    strategy, _, total = spec.partition(":")
    epochs, iters = schedules[strategy]
    return strategy, (int(total) // iters if total else epochs), iters


def arm_rows(results, prefix, seeds, arms, baseline):
    """The table rows of one strategy and case count: for each arm whose runs `{prefix}_s{seed}_{arm}` all
    exist, (arm, runs, "mean (per seed)" test Dice, mean HD95, Dice points against the `baseline` arm)."""
    runs_of = {arm: [results.get(f"{prefix}_s{s}_{arm}") for s in seeds] for arm in arms}
    means = {arm: sum(r["test"]["mean"]["Dice"] for r in runs) / len(runs) for arm, runs in runs_of.items() if all(runs)}
    for arm in arms:
        runs = runs_of[arm]
        if not all(runs):
            continue
        dice = [r["test"]["mean"]["Dice"] for r in runs]
        delta = f"{100 * (means[arm] - means[baseline]):+.1f}" if baseline in means and arm != baseline else ""
        yield (arm, runs, f"{means[arm]:.3f} ({' / '.join(f'{d:.3f}' for d in dice)})",
               sum(r["test"]["mean"]["HD95"] for r in runs) / len(runs), delta)


def predict_and_evaluate(work, run_env, method, name, images, labels, *flags):
    preds = work / "preds" / name
    shutil.rmtree(preds, ignore_errors=True)
    seconds = run(["samunet_predict", "-i", images, "-o", preds, "-d", "501", "-s", method, "-b", "litemedsam",
                   "-f", "0", "-npp", "1", "-nps", "1", *flags], run_env, work / f"predict_{name}.log")
    info = json.loads((preds / "prediction_info.json").read_text())
    return seconds / len(os.listdir(images)), evaluate(labels, preds), info["mirroring_axes"]


def samunet_run(work, env, method, n, pool_size, budget, images, labels, train_extra=(), tag="",
                also_without_tta=False):
    """Train one configuration under the budget; predict the test cases with samunet_predict's defaults
    (and, with `also_without_tta`, once more with --disable-tta)."""
    _, val, pool = split(work)
    pre = work / "sam_pre" / "Dataset501_Hippocampus"
    (pre / "splits_final.json").write_text(json.dumps([{"train": pool, "val": val}]))
    shutil.rmtree(pre / "embedding_cache", ignore_errors=True)  # every run pays its own cache fill
    results = work / "sam_res" / f"n{n}{tag}"
    shutil.rmtree(results / "Dataset501_Hippocampus" / f"{method}__litemedsam", ignore_errors=True)
    run_env = dict(env, SAMUNET_RESULTS=str(results))
    # With all cases the cache fill alone (~0.5 s x 6900 slices) exceeds any budget here: train uncached.
    no_cache = ["--no-cache"] if method in CACHED and n == pool_size else []
    iters = 25 if method in CACHED and not no_cache else 5
    train_seconds = run(["samunet_train", "501", method, "0", "-b", "litemedsam", "--num-train-cases", str(n),
                         "--epochs", "1000", "--iters-per-epoch", str(iters), "--batch-size", "8", "--val-slices", "20",
                         "--time-budget", str(budget), "-np", "0", *no_cache, *train_extra], run_env,
                        work / f"train_{method}_n{n}{tag}.log")
    fold = results / "Dataset501_Hippocampus" / f"{method}__litemedsam" / "fold_0"
    log_text = (fold / "training_log.txt").read_text()
    name = f"{method}_n{n}{tag}"
    seconds, test, mirroring = predict_and_evaluate(work, run_env, method, name, images, labels)
    result = {"train_command_seconds": train_seconds, "epochs": log_text.count(": train loss"),
              "uncached": bool(no_cache), "predict_seconds_per_case": seconds, "test": test,
              "test_mirroring_axes": mirroring}
    if also_without_tta:
        seconds, test, _ = predict_and_evaluate(work, run_env, method, f"{name}_notta", images, labels, "--disable-tta")
        result |= {"predict_seconds_per_case_without_tta": seconds, "test_without_tta": test}
    return result


def nnunet_run(work, env, n, budget, images, labels):
    results = work / "nn_res" / f"n{n}"
    shutil.rmtree(results, ignore_errors=True)
    run_env = dict(env, nnUNet_results=str(results))
    preds = work / "preds" / f"nnunet_n{n}"
    shutil.rmtree(preds, ignore_errors=True)
    run([sys.executable, __file__, "_nnunet", "--work", work, "--n", str(n), "--budget-minutes", str(budget)],
        run_env, work / f"nnunet_n{n}.log")
    timing = json.loads((preds / "timing.json").read_text())
    (preds / "timing.json").unlink()
    return {"train_command_seconds": timing["train_seconds"], "epochs": timing["epochs"],
            "predict_seconds_per_case": timing["predict_seconds"] / len(os.listdir(images)),
            "test": evaluate(labels, preds)}


def nnunet_train_and_predict(work, n, budget):
    """Runs in its own process (nnU-Net reads its folders from the environment at import)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from samunet.trainers.epoch_loop import BUDGET_ESTIMATE_EPOCHS

    MAX_EPOCHS = 1000

    class RefittedPoly:
        """nnU-Net's per-epoch poly decay, re-fitted as samunet_train --time-budget re-fits its own: from
        epoch `start` on, from the LR it had there to 0 at `max_steps` (no jump when the fit moves)."""

        def __init__(self, optimizer, initial_lr, max_steps):
            self.optimizer, self.max_steps = optimizer, max_steps
            self.start, self.start_lr = 0, initial_lr

        def lr(self, epoch):
            return self.start_lr * max(0.0, 1 - (epoch - self.start) / max(1, self.max_steps - self.start)) ** 0.9

        def end_after(self, epoch, max_steps):
            self.start_lr, self.start, self.max_steps = self.lr(epoch), epoch, max_steps

        def step(self, current_step):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr(current_step)

    class BudgetTrainer(nnUNetTrainer):
        """nnU-Net's trainer with short epochs and the same wall-clock rule as samunet_train --time-budget
        (trainers/epoch_loop.py): after each epoch the last epoch that fits is judged from the longest of the
        last 3 (logging and checkpoints included) and the LR decay re-fitted to end there."""

        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            self.started = time.perf_counter()
            super().__init__(plans, configuration, fold, dataset_json, device)  # nnU-Net records these by name
            self.num_iterations_per_epoch = 5  # ~10 s each on this CPU (batch 281 of 56 x 40)
            self.num_val_iterations_per_epoch = 2
            self.num_epochs = MAX_EPOCHS  # re-fitted to the budget after each epoch

        def configure_optimizers(self):
            optimizer, _ = super().configure_optimizers()
            return optimizer, RefittedPoly(optimizer, self.initial_lr, self.num_epochs)

        def run_training(self):
            self.on_train_start()
            cycles = []
            while self.current_epoch < self.num_epochs:
                start = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val)
                epoch = self.current_epoch
                self.on_epoch_end()  # advances current_epoch
                cycles.append(time.perf_counter() - start)
                remaining = budget * 60 - (time.perf_counter() - self.started)
                last = min(MAX_EPOCHS - 1, epoch + int(remaining // max(cycles[-BUDGET_ESTIMATE_EPOCHS:])))
                if last <= epoch:
                    break
                if last != self.num_epochs - 1:
                    self.num_epochs = last + 1
                    self.lr_scheduler.end_after(epoch + 1, self.num_epochs)
            self.on_train_end()

    pre = Path(os.environ["nnUNet_preprocessed"]) / "Dataset502_Hippocampus"
    _, val, pool = split(work)
    (pre / "splits_final.json").write_text(json.dumps([{"train": pool[:n], "val": val}]))
    plans = json.loads((pre / "nnUNetPlans.json").read_text()) | {"continue_training": False}  # as nnU-Net's launcher sets
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = BudgetTrainer(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                            device=torch.device("cpu"))
    trainer.run_training()
    train_seconds = time.perf_counter() - trainer.started
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's own validation does before predicting
    trainer.network.eval()
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=True, verbose=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                    [trainer.network.state_dict()], trainer.dataset_json, "nnUNetTrainer",
                                    trainer.inference_allowed_mirroring_axes)
    preds = work / "preds" / f"nnunet_n{n}"
    start = time.perf_counter()
    predictor.predict_from_files(str(work / "test" / "imagesTs"), str(preds), num_processes_preprocessing=1,
                                 num_processes_segmentation_export=1)
    timing = {"train_seconds": train_seconds, "epochs": trainer.current_epoch,
              "predict_seconds": time.perf_counter() - start}
    (preds / "timing.json").write_text(json.dumps(timing))
    for extra in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (preds / extra).unlink(missing_ok=True)


def table(results, counts):
    lines = ["| method | training cases | epochs | Anterior Dice | Posterior Dice | mean Dice | mean HD95 (mm) | "
             "train command (s) | predict (s / case) |", "|---|---|---|---|---|---|---|---|---|"]
    for method, runs in results.items():
        for n in counts:
            r = runs.get(str(n))
            if r:
                t = r["test"]
                name = method + (" (uncached)" if r.get("uncached") else "")
                lines.append(f"| {name} | {n} | {r['epochs']} | {t['Anterior']['Dice']:.3f} | {t['Posterior']['Dice']:.3f} | "
                             f"**{t['mean']['Dice']:.3f}** | {t['mean']['HD95']:.2f} | {r['train_command_seconds']:.0f} | "
                             f"{r['predict_seconds_per_case']:.1f} |")
    return "\n".join(lines)


def plot(results, counts, path, budget):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in results.items():
        xs = [n for n in counts if str(n) in runs]
        ax.plot(xs, [runs[str(n)]["test"]["mean"]["Dice"] for n in xs], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("labelled training volumes")
    ax.set_ylabel("test Dice (mean of 2 classes)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Hippocampus, {budget:g} min of 2-core CPU training per run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", nargs="?", default="all", choices=("all", "_nnunet"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--budget-minutes", type=float, default=4.0)
    p.add_argument("--counts", nargs="+", default=["1", "5", "all"], help="training cases per run ('all' = the pool)")
    p.add_argument("--methods", nargs="+", default=[*SAMUNET_METHODS, "nnunet"])
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    work = args.work.resolve()
    if args.mode == "_nnunet":
        return nnunet_train_and_predict(work, args.n, args.budget_minutes)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return None
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet="nnunet" in args.methods)
    pool_size = len(split(work)[2])
    counts = [pool_size if c == "all" else int(c) for c in args.counts]
    results_file = work / f"hippocampus_{args.budget_minutes:g}min.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for n in counts:
        for method in args.methods:
            log(f"{method}, {n} training cases, budget {args.budget_minutes} min")
            if method == "nnunet":
                r = nnunet_run(work, env, n, args.budget_minutes, images, labels)
            else:
                r = samunet_run(work, env, method, n, pool_size, args.budget_minutes, images, labels)
            r["budget_minutes"] = args.budget_minutes
            results.setdefault(method, {})[str(n)] = r
            results_file.write_text(json.dumps(results, indent=1))
            log(f"  -> test Dice {r['test']['mean']['Dice']:.3f}, HD95 {r['test']['mean']['HD95']:.2f} mm, "
                f"{r['epochs']} epochs")
    # Every count in the results file, not only this invocation's: partial re-runs keep the whole picture.
    all_counts = sorted({int(n) for runs in results.values() for n in runs})
    plot(results, all_counts, REPO / "docs" / f"hippocampus_benchmark_{args.budget_minutes:g}min.png", args.budget_minutes)
    print(table(results, all_counts))
    return results


if __name__ == "__main__":
    main()
