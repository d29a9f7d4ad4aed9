"""LiteMedSAM at smaller input sizes than its native 256 x 256 on MSD hippocampus (the planner's
input-size rule, planners/backbone_sizing.input_size_for, rests on this measurement).

For each input size: encode the slices of 5 training and 8 test cases with the frozen encoder (inference
precision, as the embedding cache does), train the `decoder` strategy's head for the same 200 iterations
(batch 8, AdamW 5e-4 with warm-up and poly decay, CE + Dice, a third of the slices drawn from foreground,
the same draws and head initialisation for every size), then predict the test cases and compute per-class Dice in 3D at the
preprocessed resolution. Reports encoder seconds per slice, seconds per training iteration and Dice.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/litemedsam_input_size.py --work DIR [--sizes 64 96 128 256] [--seed 0]

DIR/sam_pre must hold Dataset501_Hippocampus preprocessed by samunet (benchmarks/hippocampus.py makes it:
its split is reused: test = every 25th sorted case, training = the first 5 of the pool).
"""
import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samunet.file_io import read_json
from samunet.malloc_tuning import tune_malloc
from samunet.models.build import build_model
from samunet.models.inference_precision import for_inference
from samunet.preprocessing.storage import load_case
from samunet.models.input_mapping import InputMapper
from samunet.planners.plan_file import PlanView
from samunet.trainers.loss import ce_dice_loss
from samunet.trainers.lr_schedule import warmup_poly


def embed_cases(encoder, mapper, data_folder, cases):
    out = []
    with torch.no_grad():
        for case in cases:
            data, seg, _ = load_case(data_folder, case)
            slices = [encoder.encode(mapper.images([data[:, s]])).float() for s in range(data.shape[1])]
            out.append((torch.cat(slices), seg))
    return out


def run(size, pre, train_cases, test_cases, iters, seed):
    plan = read_json(pre / "samunet_plans.json")
    data_folder = pre / plan["data_identifier"]
    model = build_model("litemedsam", "decoder", 2, input_size=size)
    mapper = InputMapper(PlanView(plan).windows, PlanView(plan).encoder_input, (0, 1), size, torch.device("cpu"))
    encoder = for_inference(copy.deepcopy(model), torch.bfloat16)
    start = time.perf_counter()
    train = embed_cases(encoder, mapper, data_folder, train_cases)
    test = embed_cases(encoder, mapper, data_folder, test_cases)
    encode_seconds = (time.perf_counter() - start) / sum(e.shape[0] for e, _ in train + test)

    slices = [(i, s) for i, (e, _) in enumerate(train) for s in range(e.shape[0])]
    foreground = [(i, s) for i, s in slices if train[i][1][s].any()]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.01)
    scheduler, _ = warmup_poly(optimizer, iters, 10)
    rng = np.random.default_rng(seed)
    model.train()
    start = time.perf_counter()
    for _ in range(iters):
        pick = [foreground[rng.integers(len(foreground))] if rng.random() < 0.33 else slices[rng.integers(len(slices))]
                for _ in range(8)]
        embeddings = torch.stack([train[i][0][s] for i, s in pick])
        labels = mapper.labels([train[i][1][s] for i, s in pick])
        with torch.autocast("cpu", torch.bfloat16):
            logits = model.decode(embeddings)
        loss = ce_dice_loss(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 12.0)
        optimizer.step()
        scheduler.step()
    train_seconds = (time.perf_counter() - start) / iters

    model.eval()
    dice = []
    with torch.no_grad():
        for embeddings, seg in test:
            with torch.autocast("cpu", torch.bfloat16):
                logits = model.decode(embeddings).float()
            pred = F.interpolate(logits, size=seg.shape[1:], mode="bilinear").argmax(1).numpy()
            dice.append([2 * ((pred == c) & (seg == c)).sum() / max(1, (pred == c).sum() + (seg == c).sum())
                         for c in (1, 2)])
    return {"input_size": size, "encoder_seconds_per_slice": round(encode_seconds, 3),
            "train_seconds_per_iteration": round(train_seconds, 3),
            "test_dice_per_class": np.mean(dice, 0).round(4).tolist(), "test_mean_dice": round(float(np.mean(dice)), 4)}


def main():
    tune_malloc()  # as every samunet command does (samunet/malloc_tuning.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, help="the folder benchmarks/hippocampus.py worked in")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 256])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="slice draws and head initialisation")
    args = parser.parse_args()
    pre = Path(args.work) / "sam_pre" / "Dataset501_Hippocampus"
    if not pre.is_dir():
        print(f"skipped: {pre} not found (run benchmarks/hippocampus.py first)")
        return
    ids = sorted(p.stem for p in (pre / read_json(pre / "samunet_plans.json")["data_identifier"]).glob("*.json"))
    test_cases = ids[::25]
    pool = [i for i in ids if i not in test_cases and i != ids[1]]
    results = []
    for size in args.sizes:
        torch.manual_seed(args.seed)
        results.append(run(size, pre, pool[:5], test_cases, args.iters, args.seed))
    for r in results:
        print(json.dumps(r))
    (Path(args.work) / f"litemedsam_input_size_seed{args.seed}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
