"""Cross-validation splits, made exactly as nnU-Net makes them so that folds are comparable."""
from sklearn.model_selection import KFold

SPLITS_FILE = "splits_final.json"
NUM_FOLDS = 5
SPLIT_SEED = 12345


def make_splits(case_ids, num_folds=NUM_FOLDS, seed=SPLIT_SEED):
    """KFold(shuffle=True, random_state=12345) over the sorted case ids, as nnU-Net v2.

    With fewer cases than folds, each case is its own validation fold; a single case trains and
    validates on itself (the only way to run at all, and the split file says so).
    """
    keys = sorted(case_ids)
    if len(keys) == 1:
        return [{"train": keys, "val": keys}]
    kfold = KFold(n_splits=min(num_folds, len(keys)), shuffle=True, random_state=seed)
    return [
        {"train": [keys[i] for i in train], "val": [keys[i] for i in val]}
        for train, val in kfold.split(keys)
    ]
