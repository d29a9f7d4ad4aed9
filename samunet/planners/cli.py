"""Commands of the planning stage: `samunet_extract_fingerprint` and `samunet_plan_experiment`."""
import argparse

from tqdm import tqdm

from samunet.cli_types import int_at_least
from samunet.dataset_integrity import check_headers, verify_dataset_integrity
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import copy_file, folder_lock, read_json, write_json
from samunet.layout import FINGERPRINT_FILE, PLANS_FILE, SPLITS_FILE
from samunet.parallel import add_num_processes_argument
from samunet.paths import find_raw_dataset, preprocessed_root
from samunet.planners.backbone_sizing import DEFAULT_GPU_MEMORY_GB
from samunet.models.input_mapping import PROJECTED, SEPARATE
from samunet.planners.experiment_planner import CHANNEL_ENCODING, CONTEXT_SLICES, FUSED_SLICES, plan_experiment
from samunet.planners.fingerprint import FINGERPRINT_VERSION, extract_fingerprint
from samunet.planners.plan_file import read_splits
from samunet.planners.splits import make_splits
from samunet.raw_dataset import load_raw_dataset


def run_fingerprint(dataset_id, num_processes=1, verify=False, clean=False):
    """Write dataset_fingerprint.json and a copy of dataset.json; reuse a fingerprint of unchanged data."""
    raw = load_raw_dataset(find_raw_dataset(dataset_id))
    if verify:
        verify_dataset_integrity(raw, num_processes)
    else:
        check_headers(raw)
    out = preprocessed_root() / raw.name
    with folder_lock(out, "samunet_extract_fingerprint"):
        return _fingerprint_locked(raw, out, num_processes, clean)


def _fingerprint_locked(raw, out, num_processes, clean):
    path = out / FINGERPRINT_FILE
    if path.is_file() and not clean:
        try:
            previous = read_json(path)
            current = {"source_stamp": raw.source_stamp(), "fingerprint_version": FINGERPRINT_VERSION}
            if isinstance(previous, dict) and all(previous.get(k) == v for k, v in current.items()):
                tqdm.write(f"{path}: up to date (use --clean to recompute)")
                return path
        except SamunetError:
            pass  # unreadable: recompute it
    fingerprint = extract_fingerprint(raw, num_processes)
    # Later stages read only the preprocessed folder, so the dataset description travels with it.
    copy_file(raw.folder / "dataset.json", out / "dataset.json")
    write_json(fingerprint, path)
    tqdm.write(f"wrote {path}")
    return path


def run_planning(dataset_id, gpu_memory_gb=DEFAULT_GPU_MEMORY_GB, context_slices=CONTEXT_SLICES,
                 fused_slices=FUSED_SLICES, channel_encoding=CHANNEL_ENCODING):
    """Write samunet_plans.json, and splits_final.json unless one exists (users may have edited theirs)."""
    out = preprocessed_root() / find_raw_dataset(dataset_id).name
    with folder_lock(out, "samunet_plan_experiment"):
        return _plan_locked(out, gpu_memory_gb, context_slices, fused_slices, channel_encoding)


def _plan_locked(out, gpu_memory_gb, context_slices, fused_slices, channel_encoding):
    fingerprint_path = out / FINGERPRINT_FILE
    if not fingerprint_path.is_file():
        raise SamunetError(f"{fingerprint_path}: no fingerprint yet; run samunet_extract_fingerprint first")
    if gpu_memory_gb <= 0:
        raise SamunetError(f"--gpu-memory-gb must be positive, got {gpu_memory_gb}")
    fingerprint = read_json(fingerprint_path)
    plan = plan_experiment(fingerprint, gpu_memory_gb, context_slices=context_slices, fused_slices=fused_slices,
                           channel_encoding=channel_encoding)
    write_json(plan, out / PLANS_FILE)
    print(f"default backbone: {plan['default_backbone']} ({plan['default_backbone_reason']})")
    print(f"slicing axis {plan['slicing_axis']} (z, y, x order), in-plane spacing {plan['in_plane_spacing_transposed']}, "
          f"{plan['encoder_input']['context_slices']} context slice(s) each side in the encoder input, "
          f"{plan['encoder_input']['fused_slices']} fused in the head, channels "
          f"{plan['encoder_input']['channel_encoding']}")
    splits_path = out / SPLITS_FILE
    if splits_path.is_file():
        known = {c for fold in read_splits(splits_path) for c in fold["train"] + fold["val"]}
        if known != set(fingerprint["case_ids"]):
            print(f"warning: {splits_path} was kept but does not list exactly the dataset's cases")
    else:
        write_json(make_splits(fingerprint["case_ids"]), splits_path)
    print(f"wrote {out / PLANS_FILE}")
    return out / PLANS_FILE


def add_fingerprint_arguments(parser):
    add_num_processes_argument(parser)
    parser.add_argument(
        "--verify_dataset_integrity", action="store_true", help="read every case first and list every problem found"
    )
    parser.add_argument("--clean", action="store_true", help="recompute even when up to date")


def add_planning_arguments(parser):
    parser.add_argument(
        "--gpu-memory-gb",
        type=float,
        default=DEFAULT_GPU_MEMORY_GB,
        help=f"GPU memory budget that batch sizes are sized for (default {DEFAULT_GPU_MEMORY_GB})",
    )
    parser.add_argument(
        "--context-slices", type=int_at_least(0), default=CONTEXT_SLICES,
        help="neighbouring slices each side fed to the encoder with each slice (1: slices z-1, z, z+1 as SAM's "
             f"three channels; default {CONTEXT_SLICES}); never on 2D or multi-channel data",
    )
    parser.add_argument(
        "--fused-slices", type=int_at_least(0), default=FUSED_SLICES,
        help="neighbouring slices each side whose embeddings the head fuses with each slice's (each slice "
             f"encoded alone; default {FUSED_SLICES}); never on 2D data",
    )
    parser.add_argument(
        "--channel-encoding", choices=(PROJECTED, SEPARATE), default=CHANNEL_ENCODING,
        help="several channels: projected into SAM's 3 input channels, or each encoded alone as a grey image "
             f"and the embeddings fused in the head (C encoder passes per slice; default {CHANNEL_ENCODING})",
    )


@cli_entry
def extract_fingerprint_entry(argv=None):
    parser = argparse.ArgumentParser(description="Fingerprint a raw dataset (spacings, shapes, intensities).")
    parser.add_argument("-d", required=True, help="dataset id, e.g. 501")
    add_fingerprint_arguments(parser)
    args = parser.parse_args(argv)
    run_fingerprint(args.d, args.np, args.verify_dataset_integrity, args.clean)


@cli_entry
def plan_experiment_entry(argv=None):
    parser = argparse.ArgumentParser(description="Write samunet_plans.json and splits_final.json from the fingerprint.")
    parser.add_argument("-d", required=True, help="dataset id, e.g. 501")
    add_planning_arguments(parser)
    args = parser.parse_args(argv)
    run_planning(args.d, args.gpu_memory_gb, args.context_slices, args.fused_slices, args.channel_encoding)
