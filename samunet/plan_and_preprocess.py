"""`samunet_plan_and_preprocess -d ID`: fingerprint, plan and preprocess in one command."""
import argparse

from samunet.errors import cli_entry
from samunet.planners.cli import add_fingerprint_arguments, add_planning_arguments, run_fingerprint, run_planning
from samunet.preprocessing.preprocess_dataset import preprocess_dataset


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Fingerprint, plan and preprocess nnU-Net v2 style datasets for SAM.")
    parser.add_argument("-d", nargs="+", required=True, help="dataset id(s), e.g. 501")
    add_fingerprint_arguments(parser)
    add_planning_arguments(parser)
    parser.add_argument("--no_pp", action="store_true", help="fingerprint and plan only, no preprocessing")
    args = parser.parse_args(argv)
    for dataset_id in args.d:
        run_fingerprint(dataset_id, args.np, args.verify_dataset_integrity, args.clean)
        run_planning(dataset_id, args.gpu_memory_gb, args.context_slices, args.fused_slices, args.channel_encoding)
        if not args.no_pp:
            preprocess_dataset(dataset_id, args.np, args.clean)
