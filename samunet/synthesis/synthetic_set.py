"""The synthesis stage: a few labelled exemplars + every unlabelled image -> a set of synthetic labelled cases.

Exemplars are the first N cases of the fold's training split (what `samunet_train --num-train-cases N`
trains on). Targets are the images of every other case the user has: the fold's other training cases,
imagesTs and --extra-images folders, preprocessed without labels (preprocessing/unlabelled_images.py),
so no label but the exemplars' is ever read. The fold's validation cases are never targets.

Layout, beside the real cases and never mixed with them:

    <preprocessed>/DatasetXXX_Name/synthetic_<data identifier>/<method>_fold<F>_n<N>/
        syn_<set>_<target>.b2nd, _seg.b2nd, .json   one case each, in the preprocessing stage's format
                                                    (storage.py); the .json adds "synthesis": source image,
                                                    exemplars, quality and the method's own numbers
        synthesis.json                              what the set was made from and of, which cases
                                                    training uses and with which weight

Each case is stamped with the method, its options, the seed, the exemplars' and the target's stamps
(which include the plan's preprocessing): a later run redoes exactly the cases whose inputs changed or
that an interrupted run left unfinished, and deletes those whose target is gone.

Which cases training uses, and how often: synthesis/quality.py.
"""
import functools
import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from samunet.errors import SamunetError
from samunet.file_io import folder_lock, read_json, remove_temporaries, write_json
from samunet.layout import SPLITS_FILE
from samunet.parallel import map_with_progress
from samunet.planners.plan_file import read_splits
from samunet.planners.splits import fold_cases
from samunet.preprocessing.preprocess_case import class_slices
from samunet.preprocessing.storage import case_files, is_case_current, load_case, load_properties, save_case
from samunet.preprocessing.unlabelled_images import TRAINING_PREFIX, prepare_unlabelled_images
from samunet.synthesis.methods import DEFAULT_METHOD, METHODS
from samunet.synthesis.quality import RULE as QUALITY_RULE, sampling_weights
from samunet.synthesis.volumes import SyntheticCase, Volume

FOLDER_PREFIX = "synthetic_"
DESCRIPTION_FILE = "synthesis.json"
FORMAT = 1
DEFAULT_SEED = 12345


@dataclass
class SyntheticSet:
    folder: Path
    case_ids: list  # the cases training draws from
    weights: np.ndarray  # their sampling probabilities (sum 1)
    description: dict  # synthesis.json


def set_name(method, fold, num_exemplars):
    return f"{method}_fold{fold}_n{num_exemplars}"


def set_folder(preprocessed_folder, plan, name):
    return Path(preprocessed_folder) / f"{FOLDER_PREFIX}{plan['data_identifier']}" / name


def synthetic_id(name, target_id):
    return f"syn_{name}_{target_id}"


def _exemplars_and_targets(preprocessed, plan, fold, num_exemplars, image_ids):
    data_folder = Path(preprocessed) / plan["data_identifier"]
    all_cases = sorted(p.stem for p in data_folder.glob("*.json"))
    splits = read_splits(Path(preprocessed) / SPLITS_FILE)
    train, _ = fold_cases(splits, fold, all_cases)
    exemplars, _ = fold_cases(splits, fold, all_cases, num_exemplars)  # checks N against the fold, as training does
    for case_id in exemplars:
        if not case_files(data_folder, case_id)[1].is_file():
            raise SamunetError(f"{data_folder}: exemplar {case_id} is not preprocessed; run samunet_preprocess")
    others = {f"{TRAINING_PREFIX}{c}" for c in train[num_exemplars:]}
    # imagesTr cases outside the fold's training cases (its validation cases) are never targets
    targets = [i for i in image_ids if i in others or not i.startswith(TRAINING_PREFIX)]
    return data_folder, exemplars, targets


def _load_volume(folder, case_id, labelled):
    data, seg, props = load_case(folder, case_id)
    return Volume(case_id, data, tuple(props["spacing_after_resampling"]), seg if labelled else None)


@functools.lru_cache(maxsize=32)
def _load_exemplar(folder, case_id, stamp):
    """A worker loads each exemplar once (the stamp is part of the key: a changed case is read again)."""
    return _load_volume(folder, case_id, labelled=True)


def _case_stamp(method, options, seed, exemplars, target):
    key = {"format": FORMAT, "method": method, "options": options, "seed": seed, "exemplars": exemplars,
           "target": target}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _synthesize_one(job):
    start = time.perf_counter()
    if job["single_threaded"]:  # worker processes share the cores: one ITK thread each
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    target_folder, target_id, _ = job["target"]
    target = _load_volume(target_folder, target_id, labelled=False)
    exemplars = [_load_exemplar(folder, case_id, stamp) for folder, case_id, stamp in job["exemplars"]]
    rng = np.random.default_rng([job["seed"], zlib.crc32(target_id.encode())])
    try:
        result = METHODS[job["method"]].synthesize(target, exemplars, rng, job["options"])
    except RuntimeError as err:  # SimpleITK reports a registration that cannot run as RuntimeError
        # One odd image must not stop a run over hundreds: the case is kept with quality 0, so the
        # quality rule leaves it out of training, and synthesis.json lists it as failed.
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        result = SyntheticCase(seg=np.zeros(target.image.shape[1:], exemplars[0].seg.dtype), quality=0.0,
                               details={"failed": reason})
    image = target.image if result.image is None else result.image.astype(np.float32)
    props = {k: v for k, v in load_properties(target_folder, target_id).items() if k not in ("stamp", "case_id")}
    seconds = time.perf_counter() - start
    props |= {
        "case_id": job["case_id"], "stamp": job["stamp"],
        "class_slices": class_slices(result.seg, job["label_values"]),
        "synthesis": {"method": job["method"], "target": target_id, "exemplars": [e.case_id for e in exemplars],
                      "quality": result.quality, "seconds": seconds, **result.details},
    }
    save_case(job["folder"], job["case_id"], image, result.seg, props)
    return seconds


def synthesize_set(raw_folder, preprocessed, plan, fold, num_exemplars, method=DEFAULT_METHOD, options=None,
                   extra_folders=None, num_processes=1, seed=None, show_progress=True):
    """Make (or bring up to date) the synthetic set for these exemplars; returns it as a SyntheticSet.
    `options`, `extra_folders` and `seed` left None are those the set was last made with (so that
    `samunet_train --synthesis` uses a set as samunet_synthesize made it), else the defaults."""
    if method not in METHODS:
        raise SamunetError(f"synthesis method '{method}' unknown; choose from {', '.join(METHODS)}")
    name = set_name(method, fold, num_exemplars)
    folder = set_folder(preprocessed, plan, name)
    previous = read_json(folder / DESCRIPTION_FILE) if (folder / DESCRIPTION_FILE).is_file() else {}
    options = {**METHODS[method].DEFAULTS, **(previous.get("options", {}) if options is None else options)}
    extra_folders = previous.get("extra_folders", []) if extra_folders is None else extra_folders
    seed = previous.get("seed", DEFAULT_SEED) if seed is None else seed
    images = prepare_unlabelled_images(raw_folder, preprocessed, plan, extra_folders, num_processes, show_progress)
    data_folder, exemplars, targets = _exemplars_and_targets(preprocessed, plan, fold, num_exemplars, images.case_ids)
    if not targets:
        raise SamunetError(f"fold {fold} with {num_exemplars} exemplars leaves no unlabelled image to synthesise "
                           "from: add imagesTs or --extra-images")
    exemplar_stamps = [(str(data_folder), c, load_properties(data_folder, c)["stamp"]) for c in exemplars]
    label_values = [int(v) for v in plan["labels"].values()]
    with folder_lock(folder, "samunet_synthesize"):
        folder.mkdir(parents=True, exist_ok=True)
        remove_temporaries(folder)
        wanted = {synthetic_id(name, t): t for t in targets}
        for stale in folder.glob("*.json"):  # cases of targets that are gone
            if stale.name != DESCRIPTION_FILE and stale.stem not in wanted:
                for path in case_files(folder, stale.stem):
                    path.unlink(missing_ok=True)
        jobs = []
        for case_id, target_id in wanted.items():
            target_stamp = load_properties(images.data_folder, target_id)["stamp"]
            stamp = _case_stamp(method, options, seed, [s[1:] for s in exemplar_stamps], [target_id, target_stamp])
            if not is_case_current(folder, case_id, stamp):
                jobs.append({"folder": folder, "case_id": case_id, "stamp": stamp, "method": method,
                             "options": options, "seed": seed, "exemplars": exemplar_stamps,
                             "target": (str(images.data_folder), target_id, target_stamp),
                             "label_values": label_values, "single_threaded": num_processes > 1})
        began = time.perf_counter()
        seconds = map_with_progress(_synthesize_one, jobs, num_processes, desc=f"synthesis ({name})")
        wall = time.perf_counter() - began
        records = {c: load_properties(folder, c)["synthesis"] for c in wanted}
        qualities = {c: r["quality"] for c, r in records.items()}
        failed = sorted(c for c, r in records.items() if "failed" in r)
        weights, floor = sampling_weights(qualities)
        description = {
            "format": FORMAT, "method": method, "options": options, "seed": seed, "fold": fold,
            "num_exemplars": num_exemplars, "exemplars": {c: s for _, c, s in exemplar_stamps},
            "unlabelled_images": images.counts, "extra_folders": [str(Path(f).resolve()) for f in extra_folders],
            "num_cases": len(wanted), "num_used": len(weights), "failed": failed, "quality_floor": floor,
            "quality_rule": QUALITY_RULE,
            "cases": {c: {"target": t, "quality": qualities[c], "weight": weights.get(c, 0.0)}
                      for c, t in wanted.items()},
        }
        if jobs:  # the cost of this run's cases (a run that found everything current keeps the last figures)
            description["cost"] = {"cases": len(jobs), "wall_seconds": wall, "processes": num_processes,
                                   "seconds_per_case": float(np.mean(seconds)),
                                   "seconds_per_pair": float(np.mean(seconds)) / (num_exemplars if method == "registration" else 1)}
        elif (folder / DESCRIPTION_FILE).is_file():  # read again under the lock: another run may have made the set
            description["cost"] = read_json(folder / DESCRIPTION_FILE).get("cost")
        write_json(description, folder / DESCRIPTION_FILE)
    if show_progress:
        failures = f", {len(failed)} failed (listed in {DESCRIPTION_FILE})" if failed else ""
        tqdm.write(f"synthetic set {name}: {len(wanted)} cases ({len(jobs)} newly made), {len(weights)} used for "
                   f"training{failures} -> {folder}")
    return SyntheticSet(folder, sorted(weights), np.array([weights[c] for c in sorted(weights)]), description)


def read_synthetic_set(preprocessed, plan, fold, num_exemplars, method, exemplars):
    """The synthetic set a training run uses, checked to be made from these exemplars as they are now."""
    folder = set_folder(preprocessed, plan, set_name(method, fold, num_exemplars))
    path = folder / DESCRIPTION_FILE
    if not path.is_file():
        raise SamunetError(f"{folder}: no synthetic set; run samunet_synthesize first")
    description = read_json(path)
    data_folder = Path(preprocessed) / plan["data_identifier"]
    current = {c: load_properties(data_folder, c)["stamp"] for c in exemplars}
    if description.get("format") != FORMAT or list(description.get("exemplars", {}).items()) != list(current.items()):
        raise SamunetError(f"{path}: made from other exemplars or an older format; run samunet_synthesize again")
    used = {c: info["weight"] for c, info in description["cases"].items() if info["weight"] > 0}
    if not used:
        raise SamunetError(f"{path}: no synthetic case passed the quality rule (see the cases' quality there)")
    for case_id in used:
        if not case_files(folder, case_id)[2].is_file():
            raise SamunetError(f"{folder}: case {case_id} is missing; run samunet_synthesize again")
    ids = sorted(used)
    weights = np.array([used[c] for c in ids])
    return SyntheticSet(folder, ids, weights / weights.sum(), description)
