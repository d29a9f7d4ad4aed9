"""Every image a user has, preprocessed exactly as training slices are, labels never read: what
self-supervised pretraining (samunet_pretrain) and exemplar-guided synthesis (samunet_synthesize) learn from.

Sources: the raw dataset's `imagesTr` and `imagesTs`, and any `--extra-images` folders of volumes named
{case}_{XXXX}{file_ending} with the plan's channels. Every case goes through the preprocessing stage's
own `preprocess_case` without a label, into `<preprocessed>/DatasetXXX_Name/unlabelled_<data
identifier>/`, under an id that names its source (`Tr_`, `Ts_`, `x<hash of the folder>_`) so that equal
case names in different folders never collide. Cases are stamped like training cases, so a later run
preprocesses only what is new or changed.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from samunet.dataset_integrity import read_checked_case
from samunet.errors import SamunetError
from samunet.file_io import folder_lock, remove_temporaries
from samunet.image_folder import find_image_cases
from samunet.parallel import map_with_progress
from samunet.preprocessing.preprocess_case import preprocess_case
from samunet.preprocessing.preprocess_dataset import case_stamp
from samunet.preprocessing.storage import is_case_current, save_case
from samunet.raw_dataset import RawCase, read_dataset_json

FOLDER_PREFIX = "unlabelled_"
TRAINING_PREFIX = "Tr_"  # ids of imagesTr cases: Tr_<case id>


@dataclass
class UnlabelledImages:
    data_folder: Path  # preprocessed cases (images only)
    case_ids: list
    counts: dict  # source -> number of cases, e.g. {"imagesTr": 200, "imagesTs": 130}

    def case_list_sha256(self):
        return hashlib.sha256(json.dumps(sorted(self.case_ids)).encode()).hexdigest()


def _source_cases(folder, prefix, num_channels, ending):
    return {f"{prefix}_{case_id}": RawCase(f"{prefix}_{case_id}", paths)
            for case_id, paths in find_image_cases(folder, num_channels, ending).items()}


def collect_sources(raw_folder, extra_folders, plan):
    """{preprocessed id: RawCase without label} and {source: count}; the plan decides the channel count."""
    ending = read_dataset_json(Path(raw_folder))[3]  # (meta, channels, labels, file ending)
    num_channels = len(plan["channel_names"])
    cases, counts = {}, {}
    sources = [(Path(raw_folder) / "imagesTr", TRAINING_PREFIX[:-1]), (Path(raw_folder) / "imagesTs", "Ts")]
    for folder in extra_folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise SamunetError(f"{folder}: --extra-images folder not found")
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
        sources.append((folder, f"x{digest}"))
    for folder, prefix in sources:
        if prefix == "Ts" and not folder.is_dir():
            continue  # imagesTs is optional in nnU-Net's layout
        found = _source_cases(folder, prefix, num_channels, ending)
        cases.update(found)
        counts[str(folder) if prefix.startswith("x") else folder.name] = len(found)
    return cases, counts


def _preprocess_images(job):
    case, plan, folder, stamp = job
    images, _, geometry = read_checked_case(case, list(plan["labels"].values()))
    data, _, properties = preprocess_case(images, None, geometry, plan)
    save_case(folder, case.case_id, data, None, {"case_id": case.case_id, "stamp": stamp,
                                                 "source_files": [str(p) for p in case.images], **properties})
    return case.case_id


def prepare_unlabelled_images(raw_folder, dataset_folder, plan, extra_folders=(), num_processes=1,
                              show_progress=True):
    """Preprocess every image of every source that is not current yet; the dataset's lock is held, so
    planning, preprocessing and other runs that prepare these images wait."""
    cases, counts = collect_sources(raw_folder, extra_folders, plan)
    out = Path(dataset_folder) / f"{FOLDER_PREFIX}{plan['data_identifier']}"
    with folder_lock(dataset_folder, "preprocessing of the unlabelled images"):
        out.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out)
        jobs = []
        for case in cases.values():
            stamp = case_stamp(case, plan)
            if not is_case_current(out, case.case_id, stamp, labelled=False):
                jobs.append((case, plan, out, stamp))
        map_with_progress(_preprocess_images, jobs, num_processes, desc="preprocessing images")
    if show_progress:
        tqdm.write(f"unlabelled images: {len(cases)} cases ({', '.join(f'{n} from {s}' for s, n in counts.items())}), "
                   f"{len(jobs)} newly preprocessed -> {out}")
    return UnlabelledImages(out, sorted(cases), counts)
