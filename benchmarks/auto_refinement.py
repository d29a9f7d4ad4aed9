"""How `--prompts auto` should turn a first pass into its result (inference/prompt_sources.py AutoPrompts).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/auto_refinement.py --work /tmp/prompted

Runs on the prompted models benchmarks/prompted.py trained in WORK (`runs/*_prompted`), the choice made on
the tuning cases of benchmarks/prompted_box_growth.py (pool cases 20..29, used only by models with fewer
than 20 labelled cases), the test cases reported beside it. Per model and case the prompted model's own
prompt-free pass (mirrored as samunet_predict mirrors: the first pass of `auto`) is computed once, then:
- `first_pass`: that pass as it is (the prompted model used prompt-free);
- `first_pass_lcc`: with only the largest 3D connected component of each class kept;
- `replace`: per slice and class a box around the first pass's mask prompts the model, and the prompted
  masks replace the first pass (`auto` before the largest-piece rule);
- `fuse`: the same prompted pass, averaged with the first pass's probabilities;
- `lcc_replace`, `lcc_fuse`: the same, with the boxes drawn around the largest components only
  (`lcc_replace`: `auto` without a prompt-free configuration beside the prompted one);
- `prompt_free_model`: the first pass of the prompt-free model of the same strategy, case count and seed
  (`runs/*_prompt_free`), mirrored as samunet_predict mirrors it, as it is;
- `prompt_free_model_lcc_replace`: boxes around the largest pieces of that first pass prompt the prompted
  model (`auto` when that configuration is trained beside the prompted one).
`--variants` limits the arms computed. Boxes grow by the default share for a model's masks. Written through samunet_predict's own folder
writer, evaluated in mm. Writes WORK/auto_refinement.json and prints the table.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hippocampus import environment, evaluate, log, save  # noqa: E402
from prompted_box_growth import DATASET, tuning_cases  # noqa: E402

VARIANTS = ("first_pass", "first_pass_lcc", "replace", "fuse", "lcc_replace", "lcc_fuse", "prompt_free_model",
            "prompt_free_model_lcc_replace")


class Variant:
    """A prompt source for samunet_predict's folder loop whose first pass is shared between variants."""

    def __init__(self, name, first_passes, labels, prompt_free=None):
        """prompt_free: (the prompt-free model's predictor, its first passes by case) for the
        prompt_free_model arms."""
        from samunet.inference.prompt_sources import AutoPrompts

        self.name, self.first_passes, self.labels = name, first_passes, labels
        self.prompt_free = None
        if name.startswith("prompt_free_model"):
            self.prompt_free, self.first_passes = prompt_free
        self.auto = AutoPrompts()
        self.provenance, self.record = "model", dict(self.auto.record, variant=name)

    def select(self, cases):
        return cases

    def first_pass_predictor(self, predictor):
        return self.prompt_free or predictor

    def predict(self, predictor, case_id, data, properties):
        from samunet.connected_components import keep_largest_component

        if case_id not in self.first_passes:
            self.first_passes[case_id] = self.first_pass_predictor(predictor).predict_preprocessed(data)
        first = self.first_passes[case_id]
        seg = first.argmax(0)
        if self.name == "prompt_free_model":
            return first
        if "lcc" in self.name:
            kept = keep_largest_component(seg, self.labels)
            first = first.copy()
            first[:, kept != seg] = np.eye(len(first), dtype=first.dtype)[0][:, None]  # removed: background
            seg = kept
        if self.name.startswith("first_pass"):
            return first
        prompted = predictor.predict_with_prompts(data, predictor.prompts_from_mask(seg, self.auto.growth),
                                                  volume_key=case_id)
        return (first + prompted) / 2 if self.name.endswith("fuse") else prompted


def main():
    import torch

    from samunet.inference.predict_cli import predict_folder
    from samunet.inference.predictor import SlicePredictor
    from samunet.inference.prompted_predictor import PromptedPredictor
    from samunet.models.amp import default_amp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    work = args.work.resolve()
    os.environ.update(environment(work))
    sets = {"tuning": tuning_cases(work), "test": (work / "test" / "imagesTs", work / "test" / "labelsTs")}
    out = work / "auto_refinement.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    runs = sorted(p for p in (work / "runs").glob("*_prompted") if list(p.glob(f"{DATASET}/*/fold_0/checkpoint_final.pth")))
    for run_folder in runs:
        tag, cases = run_folder.name, int(run_folder.name.split("_n")[1].split("_")[0])
        model = next((run_folder / DATASET).glob("*__prompts-*"))
        prompt_free_folder = work / "runs" / tag.replace("_prompted", "_prompt_free") / DATASET / model.name.split("__prompts-")[0]
        predictor = prompt_free = None
        for set_name, (images, labels) in sets.items():
            if set_name == "tuning" and cases >= 20:
                continue  # the tuning cases are among its training cases
            row = results.setdefault(f"{tag}_{set_name}", {})
            first_passes, prompt_free_first_passes = {}, {}
            for name in args.variants:
                if name in row:
                    continue
                if predictor is None:
                    predictor = PromptedPredictor.from_model_folder([model], ["0"], amp=default_amp(torch.device("cpu")))
                if prompt_free is None and name.startswith("prompt_free_model"):
                    prompt_free = SlicePredictor.from_model_folder([prompt_free_folder], ["0"],
                                                                   amp=default_amp(torch.device("cpu")))
                preds = work / "auto_preds" / f"{tag}_{set_name}_{name}"
                shutil.rmtree(preds, ignore_errors=True)
                source = Variant(name, first_passes, [1, 2], (prompt_free, prompt_free_first_passes))
                predict_folder(predictor, images, preds, description=str(model), prompts=source)
                row[name] = evaluate(labels, preds)["mean"]
                log(f"{tag} {set_name} {name}: Dice {row[name]['Dice']:.3f} HD95 {row[name]['HD95']:.2f}")
                save(out, results)
    for set_name in ("tuning", "test"):
        print(f"\n{set_name} cases: mean Dice (HD95 mm)\n")
        print("| model | " + " | ".join(args.variants) + " |\n" + "|---" * (1 + len(args.variants)) + "|")
        rows = {k[: -len(set_name) - 1]: v for k, v in sorted(results.items()) if k.endswith(f"_{set_name}")}
        for tag, row in rows.items():
            print(f"| {tag} | " + " | ".join(f"{row[n]['Dice']:.3f} ({row[n]['HD95']:.2f})" if n in row else ""
                                             for n in args.variants) + " |")
        complete = [r for r in rows.values() if all(n in r for n in args.variants)]
        if complete:
            print("| mean | " + " | ".join(f"{np.mean([r[n]['Dice'] for r in complete]):.3f}" for n in args.variants) + " |")


if __name__ == "__main__":
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        sys.exit("set OMP_WAIT_POLICY=PASSIVE (2 cores: spinning OpenMP threads collapse under load)")
    main()
