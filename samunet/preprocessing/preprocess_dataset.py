"""`samunet_preprocess -d ID`: every training case through preprocess_case, in parallel, idempotently.

Reads the plan from the preprocessed dataset folder (written by planning) and the images from the raw
dataset; writes `<preprocessed>/DatasetXXX_Name/<data_identifier>/`. A case whose inputs and plan are
unchanged since it was written, and whose files all open, is skipped. The dataset's folder lock is held
throughout, so a second run of this (or of planning, or an embedding-cache fill) waits for the first.
"""
import argparse
import hashlib
import json
import shutil

from tqdm import tqdm

from samunet.dataset_integrity import check_headers, read_checked_case
from samunet.errors import SamunetError, cli_entry
from samunet.file_io import copy_file, folder_lock, remove_temporaries
from samunet.layout import GT_FOLDER, PLANS_FILE
from samunet.parallel import add_num_processes_argument, map_with_progress
from samunet.paths import find_raw_dataset, preprocessed_root
from samunet.planners.plan_file import preprocessing_fields, read_plan
from samunet.preprocessing.preprocess_case import preprocess_case
from samunet.preprocessing.storage import is_case_current, save_case
from samunet.raw_dataset import load_raw_dataset



def case_stamp(case, plan):
    """Identifies what a preprocessed case was made from: its input files and the plan's relevant fields."""
    h = hashlib.sha256(json.dumps(preprocessing_fields(plan), sort_keys=True).encode())
    for p in [*case.images, *([case.label] if case.label else [])]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _preprocess_one(job):
    case, plan, folder, stamp = job
    images, seg, geometry = read_checked_case(case, list(plan["labels"].values()))
    data, seg, props = preprocess_case(images, seg, geometry, plan)
    props = {
        "case_id": case.case_id,
        "stamp": stamp,
        "source_files": [p.name for p in [*case.images, case.label]],
        **props,
    }
    # Reference labels travel with the preprocessed data, so that training validates in 3D against them.
    gt_folder = folder.parent / GT_FOLDER
    copy_file(case.label, gt_folder / case.label.name)
    save_case(folder, case.case_id, data, seg, props)
    return case.case_id


def load_plan(dataset_folder):
    path = dataset_folder / PLANS_FILE
    if not path.is_file():
        raise SamunetError(f"{path}: no plan yet; run samunet_plan_experiment (or samunet_plan_and_preprocess) first")
    return read_plan(path)


def check_plan_matches(plan, raw, plan_path):
    if plan["labels"] != raw.labels or [int(k) for k in plan["channel_names"]] != sorted(raw.channel_names):
        raise SamunetError(f"{plan_path}: made for other labels or channels than {raw.folder / 'dataset.json'}; plan again")


def preprocess_dataset(dataset_id, num_processes=1, clean=False):
    raw = load_raw_dataset(find_raw_dataset(dataset_id))
    dataset_folder = preprocessed_root() / raw.name
    with folder_lock(dataset_folder, "samunet_preprocess"):
        return _preprocess_locked(raw, dataset_folder, num_processes, clean)


def _preprocess_locked(raw, dataset_folder, num_processes, clean):
    plan = load_plan(dataset_folder)
    check_plan_matches(plan, raw, dataset_folder / PLANS_FILE)
    check_headers(raw)
    out = dataset_folder / plan["data_identifier"]
    if clean:
        for folder in (out, dataset_folder / GT_FOLDER):
            if folder.exists():
                shutil.rmtree(folder)
    out.mkdir(parents=True, exist_ok=True)
    (dataset_folder / GT_FOLDER).mkdir(exist_ok=True)
    for folder in (out, dataset_folder / GT_FOLDER):
        remove_temporaries(folder)
    jobs = []
    for case in raw.cases.values():
        stamp = case_stamp(case, plan)
        has_reference = (dataset_folder / GT_FOLDER / case.label.name).is_file()
        if not (is_case_current(out, case.case_id, stamp) and has_reference):
            jobs.append((case, plan, out, stamp))
    done = map_with_progress(_preprocess_one, jobs, num_processes, desc="preprocessing")
    tqdm.write(f"{raw.name}: preprocessed {len(done)} case(s), {len(raw.cases) - len(done)} already up to date -> {out}")
    return out


def add_preprocess_arguments(parser):
    add_num_processes_argument(parser)
    parser.add_argument("--clean", action="store_true", help="delete earlier output of this stage and redo it")


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Preprocess a planned dataset into slices for SAM.")
    parser.add_argument("-d", required=True, help="dataset id, e.g. 501")
    add_preprocess_arguments(parser)
    args = parser.parse_args(argv)
    preprocess_dataset(args.d, args.np, args.clean)
