"""The LiteMedSAM encoder for prediction on CPU, on real hippocampus slices at the planned input size:
fp32 (batch norms folded, channels-last: the reference), bf16 autocast on the encoder as training runs it
and on the folded channels-last one, the bf16-weight model samunet predicts and fills the embedding cache
with (models/inference_precision.py), and int8 dynamic quantisation of its linear layers (PyTorch's
quantize_dynamic; convolutions, norms and attention stay fp32). Reports seconds per slice and the
relative error of the image embeddings against fp32.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/encoder_precision.py --work DIR [--cases 5] [--repeats 3]

DIR/sam_pre must hold Dataset501_Hippocampus preprocessed by samunet (benchmarks/hippocampus.py makes it).
"""
import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from samunet.file_io import read_json
from samunet.malloc_tuning import tune_malloc
from samunet.models.build import build_model
from samunet.models.inference_precision import (
    LowPrecisionEncoder,
    channels_last_gelus,
    encode_in_chunks,
    fold_batch_norms,
)
from samunet.preprocessing.storage import load_case
from samunet.models.input_mapping import InputMapper
from samunet.planners.plan_file import PlanView


def slices(pre, plan, cases, size):
    mapper = InputMapper(PlanView(plan).windows, PlanView(plan).encoder_input, (0, 1), size, torch.device("cpu"))
    data_folder = pre / plan["data_identifier"]
    out = []
    for case in cases:
        data, _, _ = load_case(data_folder, case)
        out.append(mapper.images([data[:, s] for s in range(data.shape[1])]))
    return torch.cat(out)


def chunked(encoder, images, dtype, memory_format=torch.channels_last):
    """The chunking LowPrecisionEncoder does, for the variants that do not go through it."""
    return encode_in_chunks(encoder, images.to(dtype).contiguous(memory_format=memory_format))


def timed(fn, images, repeats):
    """Best of `repeats` passes over all slices: on 2 shared cores single passes vary by +-20%."""
    seconds = []
    with torch.no_grad():
        fn(images[:8])  # warm-up: oneDNN picks and caches its kernels on first use
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn(images)
            seconds.append(time.perf_counter() - start)
    return min(seconds) / len(images), out.float()


def main():
    tune_malloc()  # as every samunet command does
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True, help="the folder benchmarks/hippocampus.py worked in")
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pre = Path(args.work) / "sam_pre" / "Dataset501_Hippocampus"
    if not pre.is_dir():
        print(f"skipped: {pre} not found (run benchmarks/hippocampus.py first)")
        return
    plan = read_json(pre / "samunet_plans.json")
    size = plan["backbones"]["litemedsam"]["input_size"]
    cases = sorted(p.stem for p in (pre / plan["data_identifier"]).glob("*.json"))[::25][: args.cases]
    images = slices(pre, plan, cases, size)
    encoder = build_model("litemedsam", "decoder", 2, input_size=size).encoder.eval()

    fp32 = channels_last_gelus(fold_batch_norms(copy.deepcopy(encoder))).to(memory_format=torch.channels_last)
    bf16 = LowPrecisionEncoder(copy.deepcopy(encoder), torch.bfloat16).eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8)
    def autocast(model, memory_format):
        def run(x):
            with torch.autocast("cpu", torch.bfloat16):
                return chunked(model, x, torch.float32, memory_format)
        return run

    variants = {
        "fp32": lambda x: chunked(fp32, x, torch.float32),
        "bf16 autocast, encoder as trained": autocast(encoder, torch.contiguous_format),
        "bf16 autocast, folded + channels-last": autocast(fp32, torch.channels_last),
        "bf16 (samunet)": bf16,
        "int8 linear layers": lambda x: chunked(int8, x, torch.float32),
    }
    results, reference = [], None
    for name, fn in variants.items():
        seconds, out = timed(fn, images, args.repeats)
        reference = out if reference is None else reference
        error = ((out - reference).norm() / reference.norm()).item()
        results.append({"variant": name, "seconds_per_slice": round(seconds, 4), "relative_error_vs_fp32": round(error, 4)})
        print(json.dumps(results[-1]), flush=True)
    print(f"{len(images)} slices of {len(cases)} cases at {size} x {size}")
    (Path(args.work) / "encoder_precision.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
