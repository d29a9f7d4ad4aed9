"""Training-speed benchmarks on CPU (or CUDA), each against a baseline measured in the same script.

1. Train-step overhead: a full `lora_both` training iteration (slice loading, augmentation, intensity
   mapping, resize, CE + Dice, clipping, scheduler) against the bare model compute (forward, CE,
   backward, optimizer step on a ready-made tensor batch of the same size), on `tiny` and LiteMedSAM.
2. Embedding cache: `decoder` on LiteMedSAM, epoch time with the cache against without it; the one-time
   cache fill is reported separately.
3. The same bound for SAM ViT-B at 1024 (random weights: only speed is measured): encoder forward per
   slice against a cached `decoder` step per slice, (encoder + step) / step.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/training_speed.py [--iters 4] [--work DIR]

Uses 3 hippocampus cases from ../shared/data (exits 0 with a message when absent).
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from samunet.malloc_tuning import tune_malloc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "Task04_Hippocampus"
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]


def prepare(work):
    os.environ.update(SAMUNET_RAW=str(work / "raw"), SAMUNET_PREPROCESSED=str(work / "pre"),
                      SAMUNET_RESULTS=str(work / "res"))
    from samunet.dataset_conversion.convert_msd import convert_msd
    from samunet.file_io import write_json
    from samunet.planners.cli import run_fingerprint, run_planning
    from samunet.preprocessing.preprocess_dataset import preprocess_dataset

    pre = work / "pre" / "Dataset501_Hippocampus"
    if not (pre / "samunet_2d").is_dir():
        raw = convert_msd(DATA, 501, 2)
        for folder in ("imagesTr", "labelsTr"):
            for p in (raw / folder).iterdir():
                if p.name.split(".")[0].removesuffix("_0000") not in CASES:
                    p.unlink()
        meta = json.loads((raw / "dataset.json").read_text())
        meta["numTraining"] = len(CASES)
        (raw / "dataset.json").write_text(json.dumps(meta))
        run_fingerprint(501, 2)
        run_planning(501)
        write_json([{"train": CASES[:2], "val": CASES[2:]}], pre / "splits_final.json")
        preprocess_dataset(501, 2)
    return pre


def make_trainer(pre, work, strategy, backbone, batch, iters, use_cache, amp, workers):
    from samunet.trainers.distributed import DistInfo
    from samunet.trainers.trainer import SamTrainer, TrainConfig

    cfg = TrainConfig(strategy=strategy, backbone=backbone, fold="0", epochs=1, iters_per_epoch=iters,
                      batch_size=batch, amp=amp, num_workers=workers, use_cache=use_cache, val_slices=8)
    out = work / "res" / f"{strategy}_{backbone}_{use_cache}_{time.time_ns()}"
    return SamTrainer(cfg, pre, out, torch.device("cpu"), DistInfo(), show_progress=False)


def interleaved_overhead(trainer, iters):
    """Median seconds of a full trainer iteration (data + step) and of the bare model compute (forward, CE,
    backward, optimizer step on a ready tensor batch of the same size), measured alternately after one
    warm-up each, so that warm-up and load drift hit both alike."""
    model, size, batch = trainer.model, trainer.model.input_size, trainer.batch_size
    low, high = model.metadata["input_range"]
    images = low + torch.rand(batch, 3, size, size) * (high - low)
    targets = torch.randint(0, model.num_outputs, (batch, size, size))
    bare_optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    batches = trainer.rank_share(trainer.sampler.epoch_batches(0, iters + 1, batch))
    loader = iter(trainer.epoch_inputs(batches))
    model.train()
    step_times, bare_times = [], []
    for _ in range(iters + 1):
        start = time.perf_counter()
        trainer.train_step(*next(loader))
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        with trainer.autocast():
            logits = model(images)
        F.cross_entropy(logits.float(), targets).backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)
        bare_times.append(time.perf_counter() - start)
    return statistics.median(step_times[1:]), statistics.median(bare_times[1:])


def epoch_seconds_per_iteration(trainer, iters):
    """Median seconds per iteration of the trainer's own loop, after one warm-up iteration."""
    batches = trainer.rank_share(trainer.sampler.epoch_batches(0, iters + 1, trainer.batch_size))
    trainer.model.train()
    times, start = [], time.perf_counter()
    for inputs, targets in trainer.epoch_inputs(batches):
        trainer.train_step(inputs, targets)
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return statistics.median(times[1:])


def vit_b_cache_bound(batch=2):
    """Seconds per slice of ViT-B's encoder forward (bf16 autocast, as uncached training runs it) and of
    a cached `decoder` step (decode, CE + Dice at 1024, backward, AdamW), best of 2 after a warm-up."""
    from samunet.models.build import build_model
    from samunet.trainers.loss import ce_dice_loss

    model = build_model("vit_b", "decoder", 2, weights=False).train()
    images = torch.rand(batch, 3, 1024, 1024) * 255
    targets = torch.randint(0, 3, (batch, 1024, 1024))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        start = time.perf_counter()
        embeddings = model.encode(images).float()
        encoder = (time.perf_counter() - start) / batch
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    steps = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            logits = model.decode(embeddings)
        ce_dice_loss(logits, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append((time.perf_counter() - start) / batch)
    return encoder, min(steps[1:])


def main():
    tune_malloc()  # as every samunet command does (samunet/malloc_tuning.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per LiteMedSAM measurement")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="samunet_train_bench_"))
    pre = prepare(work)
    torch.manual_seed(0)
    rows = []
    for backbone, batch, iters in (("tiny", 8, 40), ("litemedsam", 8, args.iters)):
        for workers in (0, 2):
            trainer = make_trainer(pre, work, "lora_both", backbone, batch, iters, False, "bf16", workers)
            step, bare = interleaved_overhead(trainer, iters)
            rows.append((backbone, workers, step, bare))
            print(f"lora_both {backbone} batch {batch} workers {workers}: step {step:.3f} s, bare {bare:.3f} s, "
                  f"ratio {step / bare:.2f}x", flush=True)

    shutil.rmtree(pre / "embedding_cache", ignore_errors=True)  # time the one-time fill, not a reuse
    cached = make_trainer(pre, work, "decoder", "litemedsam", 8, args.iters, True, "bf16", 0)
    start = time.perf_counter()
    cached.prepare()
    fill = time.perf_counter() - start
    slices = sum(cached.sampler.num_slices.values()) + sum(
        __import__("samunet.preprocessing.storage", fromlist=["x"]).load_properties(cached.data_folder, c)
        ["shape_after_resampling"][0] for c in cached.val_cases)
    with_cache = epoch_seconds_per_iteration(cached, args.iters)
    uncached = make_trainer(pre, work, "decoder", "litemedsam", 8, args.iters, False, "bf16", 0)
    without_cache = epoch_seconds_per_iteration(uncached, args.iters)
    print(f"decoder litemedsam batch 8: with cache {with_cache:.3f} s/iter, without {without_cache:.3f} s/iter, "
          f"speed-up {without_cache / with_cache:.1f}x; one-time fill {fill:.1f} s for {slices} slices "
          f"({fill / slices:.2f} s/slice)")
    encoder, step = vit_b_cache_bound()
    print(f"vit_b 1024 (random weights): encoder forward {encoder:.2f} s/slice, cached decoder step {step:.3f} "
          f"s/slice: the cache can make an iteration at most {(encoder + step) / step:.0f}x cheaper")


if __name__ == "__main__":
    main()
