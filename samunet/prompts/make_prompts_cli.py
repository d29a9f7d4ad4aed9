"""`samunet_make_prompts LABELS_FOLDER -o prompts.json [--kind box|point|box+point] [--provenance P]`:
a prompts file (prompts/prompt_file.py) from a folder of label maps, so that benchmarks can prompt with
reference-derived prompts and users can see the format.

Per case, class and slice (the image's third axis, z) where the class is present: a 2D box, a point
inside, or both, drawn as prompted training draws them (prompts/derivation.py) in the label map's
voxels: boxes jittered outwards by 0..--box-jitter voxels (default MedSAM's 5 per 256, scaled to the
slice size) or by a share of the box ("10%"), points with probability ~ depth, a negative point with
--negative-point-probability. --box-jitter 0 gives exact boxes. Provenance defaults to ground_truth: label maps
are usually references.
"""
import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samunet.cli_types import fraction
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import read_json, write_json
from samunet.imageio import SUPPORTED_ENDINGS, read_image
from samunet.prompts.derivation import KINDS, PromptRule, prompts_for_mask
from samunet.prompts.prompt_file import FORMAT, PROVENANCES, prompt_file_content


def case_prompts(label_map, rule, rng):
    """(z, y, x) label map -> {class value (str): {"slice_boxes": [...], "points": [...]}}."""
    out = {}
    for z, plane in enumerate(label_map):
        present = np.unique(plane)
        for value in present[present != 0]:
            prompt = prompts_for_mask(plane == value, z, int(value), rule, rng, size=max(plane.shape))
            entry = out.setdefault(str(int(value)), {})
            if prompt.box is not None:
                x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
                entry.setdefault("slice_boxes", []).append({"slice": z, "box": [x0, y0, x1, y1]})
            for x, y, positive in prompt.points:
                entry.setdefault("points", []).append([int(x), int(y), z, int(positive)])
    return out


def label_files(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise SamunetError(f"{folder}: folder not found")
    files = {}
    for p in sorted(folder.iterdir()):
        ending = next((e for e in SUPPORTED_ENDINGS if p.name.endswith(e)), None)
        if ending and p.is_file() and not p.name.startswith("."):
            files[p.name[: -len(ending)]] = p
    if not files:
        raise SamunetError(f"{folder}: no label maps ({', '.join(SUPPORTED_ENDINGS)})")
    return files


def check_target(out):
    """-o names a new .json file or a prompts file written before, never anything else."""
    if out.suffix != ".json":
        raise SamunetError(f"{out}: the prompts file is JSON; give -o a name ending in .json")
    if out.exists():
        try:
            ours = isinstance(existing := read_json(out), dict) and existing.get("format") == FORMAT
        except SamunetError:
            ours = False
        if not ours:
            raise SamunetError(f"{out}: exists and is not a samunet prompts file; choose another -o")


@cli_entry
def main(argv=None):
    p = argparse.ArgumentParser(description="Write a prompts file from a folder of label maps.")
    p.add_argument("labels_folder")
    p.add_argument("-o", required=True, help="prompts file to write (.json)")
    p.add_argument("--kind", choices=KINDS, default="box")
    p.add_argument("--provenance", choices=PROVENANCES, default="ground_truth")
    p.add_argument("--box-jitter", default=None, metavar="VOXELS|PERCENT",
                   help="each box side moves outwards by 0..VOXELS or 0..PERCENT%% of the box (default: 5 per 256 "
                        "voxels of slice size; 0: exact boxes)")
    p.add_argument("--negative-point-probability", type=fraction, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.o)
    check_target(out)
    rule = PromptRule(args.kind, args.box_jitter, args.negative_point_probability)
    rng = np.random.default_rng(args.seed)
    cases = {}
    for case_id, path in tqdm(label_files(args.labels_folder).items(), desc="prompts", leave=False):
        label_map, _ = read_image(path)
        if not np.issubdtype(label_map.dtype, np.integer):
            if not np.array_equal(label_map, np.round(label_map)):
                raise SamunetError(f"{path}: not a label map (non-integer values)")
            label_map = label_map.astype(np.int64)
        cases[case_id] = case_prompts(label_map, rule, rng)
    write_json(prompt_file_content(cases, args.provenance), out)
    print(f"wrote {out}: {args.kind} prompts for {len(cases)} case(s), provenance {args.provenance}")
