"""What one fold trains on, read from the preprocessed dataset and checked before anything is built: the
plan, dataset.json, the preprocessed slices, the fold's training and validation cases (few-shot: the
first N training cases), and the synthetic set a few-shot run adds (synthesis/synthetic_set.py)."""
from dataclasses import dataclass
from pathlib import Path

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.layout import PLANS_FILE, SPLITS_FILE
from samunet.planners.plan_file import read_plan, read_splits
from samunet.planners.splits import fold_cases
from samunet.preprocessing.storage import case_files
from samunet.synthesis.synthetic_set import read_synthetic_set


@dataclass
class FoldData:
    preprocessed: Path
    plan: dict
    dataset_json: dict
    data_folder: Path
    train_cases: list
    val_cases: list
    synthetic: object = None  # a SyntheticSet, or None

    def other_folders(self):
        """Where cases outside the preprocessed folder live: the synthetic ones."""
        return {c: self.synthetic.folder for c in self.synthetic.case_ids} if self.synthetic else {}


def read_fold_data(config, preprocessed_folder):
    """FoldData for `config` (a TrainConfig); one-line errors for whatever is missing."""
    preprocessed = Path(preprocessed_folder)
    plan = read_plan(preprocessed / PLANS_FILE)
    dataset_json = read_json(preprocessed / "dataset.json")
    data_folder = preprocessed / plan["data_identifier"]
    if not data_folder.is_dir():
        raise SamunetError(f"{data_folder}: not preprocessed yet; run samunet_preprocess first")
    if config.backbone not in plan["backbones"]:
        raise SamunetError(f"backbone {config.backbone} is not in {preprocessed / PLANS_FILE}")
    splits = read_splits(preprocessed / SPLITS_FILE)
    all_cases = sorted(p.stem for p in data_folder.glob("*.json"))
    train_cases, val_cases = fold_cases(splits, config.fold, all_cases, config.num_train_cases)
    synthetic = None
    if config.synthesis:
        synthetic = read_synthetic_set(preprocessed, plan, config.fold, config.num_train_cases, config.synthesis,
                                       train_cases)
    missing = sorted(set(train_cases + val_cases) - set(all_cases))
    if missing:
        raise SamunetError(f"{data_folder}: cases of the split are not preprocessed: {', '.join(missing[:5])}")
    for case_id in sorted(set(train_cases + val_cases)):
        for path in case_files(data_folder, case_id):
            if not path.is_file():
                raise SamunetError(f"{path}: missing; run samunet_preprocess again to redo the case")
    return FoldData(preprocessed, plan, dataset_json, data_folder, train_cases, val_cases, synthetic)
