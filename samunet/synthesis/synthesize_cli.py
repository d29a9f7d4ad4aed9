"""`samunet_synthesize DATASET -f FOLD --num-train-cases N [--method registration|copy_paste]
[--fusion majority|staple] [--extra-images FOLDER ...] [-np K]`

Turns the first N labelled cases of the fold's training split (the exemplars `samunet_train --num-train-cases
N` trains on) and the images of every other case (the fold's other training cases, imagesTs, extra folders;
their labels are never read) into synthetic labelled cases for training (synthesis/synthetic_set.py).
`samunet_train ... --num-train-cases N --synthesis [METHOD]` runs it itself; run it alone to choose the
options, add folders of images or see the cost first.
"""
import argparse

from samunet.cli_types import int_at_least
from samunet.errors import SamunetError, cli_entry
from samunet.layout import PLANS_FILE
from samunet.paths import find_preprocessed_dataset, find_raw_dataset
from samunet.planners.plan_file import read_plan
from samunet.synthesis.label_fusion import FUSION_RULES
from samunet.synthesis.methods import DEFAULT_METHOD, METHODS
from samunet.synthesis.synthetic_set import DEFAULT_SEED, synthesize_set


def build_parser():
    p = argparse.ArgumentParser(description="Synthesise labelled training cases from a few labelled exemplars and "
                                            "the dataset's unlabelled images.")
    p.add_argument("dataset", help="dataset id, e.g. 501")
    p.add_argument("-f", "--fold", default="0", help="fold 0-4 or 'all' (default 0): its training split gives the exemplars")
    p.add_argument("--num-train-cases", type=int_at_least(1), required=True,
                   help="N: the first N cases of the fold's training split are the labelled exemplars")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD, help=f"default {DEFAULT_METHOD}")
    p.add_argument("--fusion", choices=FUSION_RULES, default=None,
                   help="registration: how several exemplars' labels are fused (default: as the set was last made, "
                        "else majority)")
    p.add_argument("--extra-images", nargs="+", default=None, metavar="FOLDER",
                   help="more folders of unlabelled volumes named {case}_0000<file_ending> (default: those the set "
                        "was last made with)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"copy_paste's choices (default: as the set was last made, else {DEFAULT_SEED})")
    p.add_argument("-np", type=int_at_least(1), default=2, help="worker processes (default 2)")
    return p


def options_from(args):
    """The method options a command line sets (the rest are the method's defaults)."""
    if args.fusion and args.method != "registration":
        raise SamunetError("--fusion applies to the registration method only")
    return {"fusion": args.fusion} if args.fusion else None


def synthesize(args, show_progress=True):
    if args.fold != "all" and not args.fold.isdigit():
        raise SamunetError(f"fold must be a number or 'all', got '{args.fold}'")
    preprocessed = find_preprocessed_dataset(args.dataset)
    plan = read_plan(preprocessed / PLANS_FILE)
    return synthesize_set(find_raw_dataset(args.dataset), preprocessed, plan, args.fold, args.num_train_cases,
                          args.method, options_from(args), args.extra_images, args.np, args.seed, show_progress)


@cli_entry
def main(argv=None):
    synthesize(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
