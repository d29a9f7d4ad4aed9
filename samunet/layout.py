"""The names of samunet's files and folders inside the raw, preprocessed and results roots (samunet/paths.py
finds the roots and datasets). Every stage names them through this module.

    $SAMUNET_PREPROCESSED/DatasetXXX_Name/
        dataset_fingerprint.json  samunet_plans.json  splits_final.json  dataset.json
        gt_segmentations/         reference labels in the raw geometry (final validation, evaluation)
        samunet_2d/               preprocessed cases
    $SAMUNET_RESULTS/DatasetXXX_Name/
        <strategy>__<backbone>[@<pretrained>][__prompts-<kind>]/fold_F/   a trained configuration's fold
            validation/           its final validation predictions and summary.json
        best_configuration.json   samunet_find_best_configuration's choice
        pretrained/<name>/        samunet_pretrain's encoders
"""
from pathlib import Path

from samunet.paths import plain_name

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANS_FILE = "samunet_plans.json"
SPLITS_FILE = "splits_final.json"
DATA_IDENTIFIER = "samunet_2d"
GT_FOLDER = "gt_segmentations"
VALIDATION_FOLDER = "validation"
BEST_CONFIGURATION_FILE = "best_configuration.json"
PRETRAINED_FOLDER = "pretrained"
PROMPTED_SUFFIX = "__prompts-"


def configuration_name(strategy, backbone, pretrained=None, prompt_kind=None):
    """The results folder of a trained configuration: `<strategy>__<backbone>`, `@<name>` when it starts
    from the pretrained encoder `name` (so that -b litemedsam@name selects it for prediction), and
    `__prompts-<kind>` when it was trained with prompts (box, point, box-point)."""
    name = f"{strategy}__{backbone}" + (f"@{pretrained}" if pretrained else "")
    return name + (f"{PROMPTED_SUFFIX}{prompt_kind.replace('+', '-')}" if prompt_kind else "")


def is_prompted_configuration(name):
    return PROMPTED_SUFFIX in name


def fold_folder(configuration_folder, fold):
    return Path(configuration_folder) / f"fold_{fold}"


def pretrained_encoder_folder(dataset_results_folder, name):
    return Path(dataset_results_folder) / PRETRAINED_FOLDER / plain_name(name, "pretrained encoder name")
