"""Should cached training also see mirrored slices? LiteMedSAM `decoder` on hippocampus with the embedding
cache, with and without --cache-mirroring, at the same wall-clock budget, several seeds.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cache_mirroring.py --work /tmp/hippo --budget-minutes 4 --counts 5 --seeds 0 1

Split, budget and test as in benchmarks/hippocampus.py (the 8 fixed test cases, predicted from their raw
files): without mirroring the cache holds each slice as preprocessed, training never mirrors and prediction
(default) does not mirror; with it the cache also holds every slice in its three mirrorings (4x the fill,
inside the budget), each training slice is shown in one of the four, and prediction (default) averages the
four mirrored passes. The mirrored model is also predicted with --disable-tta, to separate what the
mirrored training and what test-time mirroring contribute. Writes WORK/cache_mirroring_<budget>min.json and
prints a markdown table.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import DATA, environment, log, samunet_run, set_up, split  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--budget-minutes", type=float, default=4.0)
    p.add_argument("--counts", nargs="+", type=int, default=[5], help="training cases per run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    images, labels = set_up(work, env, nnunet=False)
    pool_size = len(split(work)[2])
    results_file = work / f"cache_mirroring_{args.budget_minutes:g}min.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for n in args.counts:
        for seed in args.seeds:
            for mirroring in (False, True):
                key = f"n{n}_seed{seed}_{'mirrored' if mirroring else 'plain'}"
                log(f"{key}, budget {args.budget_minutes} min")
                extra = ["--seed", str(seed)] + (["--cache-mirroring"] if mirroring else [])
                r = samunet_run(work, env, "decoder", n, pool_size, args.budget_minutes, images, labels, extra,
                                tag=f"_{key}", also_without_tta=mirroring)
                results[key] = r | {"n": n, "seed": seed, "cache_mirroring": mirroring}
                results_file.write_text(json.dumps(results, indent=1))
                log(f"  -> test Dice {r['test']['mean']['Dice']:.3f} (mirroring {r['test_mirroring_axes']}), "
                    f"{r['epochs']} epochs")
    print("| training cases | seed | cache | epochs | test-time mirroring | mean Dice (default prediction) | "
          "mean HD95 (mm) | mean Dice with --disable-tta | predict (s / case) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        no_tta = r.get("test_without_tta", r["test"])["mean"]["Dice"]
        print(f"| {r['n']} | {r['seed']} | {'mirrored (4x)' if r['cache_mirroring'] else 'as preprocessed'} | "
              f"{r['epochs']} | {r['test_mirroring_axes'] or 'none'} | **{r['test']['mean']['Dice']:.3f}** | "
              f"{r['test']['mean']['HD95']:.2f} | {no_tta:.3f} | {r['predict_seconds_per_case']:.1f} |")


if __name__ == "__main__":
    main()
