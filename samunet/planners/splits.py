"""Cross-validation splits, made exactly as nnU-Net makes them so that folds are comparable."""
from sklearn.model_selection import KFold

from samunet.errors import SamunetError

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


def fold_cases(splits, fold, all_cases, num_train_cases=None):
    """(training cases, validation cases) of `fold` ('all': every case in both); with `num_train_cases`
    (few-shot training), the first that many training cases."""
    if fold == "all":
        train, val = sorted(all_cases), sorted(all_cases)
    else:
        index = int(fold)
        if not 0 <= index < len(splits):
            raise SamunetError(f"fold {fold} does not exist: splits_final.json has folds 0..{len(splits) - 1}")
        train, val = splits[index]["train"], splits[index]["val"]
    if num_train_cases is not None:
        if not 1 <= num_train_cases <= len(train):
            raise SamunetError(f"--num-train-cases must be 1..{len(train)} for fold {fold}")
        train = train[:num_train_cases]
    return train, val
