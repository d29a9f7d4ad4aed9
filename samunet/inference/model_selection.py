"""Which trained model `samunet_predict` uses when the user does not say.

With -d/-s/-b given, that configuration; otherwise the one trained dataset in SAMUNET_RESULTS and, within
it, the configuration named by samunet_find_best_configuration (best_configuration.json) or else the only
trained one. Folds: those given, else every fold with the requested checkpoint.
"""
from pathlib import Path

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.layout import BEST_CONFIGURATION_FILE, PLANS_FILE, PROMPTED_SUFFIX, is_prompted_configuration
from samunet.paths import find_dataset, results_root



def trained_folds(configuration_folder, checkpoint_name):
    """Fold names ('0', 'all', ...) of one <strategy>__<backbone> folder that hold the checkpoint."""
    return sorted(f.name[len("fold_"):] for f in Path(configuration_folder).glob("fold_*")
                  if (f / checkpoint_name).is_file())


def trained_configurations(dataset_folder, checkpoint_name):
    """{'strategy__backbone': [folds]} with at least one fold holding the checkpoint."""
    found = {}
    for conf in sorted(p for p in Path(dataset_folder).iterdir() if p.is_dir() and "__" in p.name):
        folds = trained_folds(conf, checkpoint_name)
        if folds:
            found[conf.name] = folds
    return found


def resolve_model(dataset=None, strategies=None, backbone=None, folds=None, checkpoint_name="checkpoint_final.pth",
                  prompted=False):
    """Returns (model folders, folds, a sentence saying what was chosen). Several folders = an ensemble.
    prompted: choose among configurations trained with prompts (<...>__prompts-<kind>), else among the others."""
    root = results_root()
    if dataset is not None:
        dataset_folder = find_dataset(root, dataset)
    else:
        trained = sorted(p for p in root.glob("Dataset*") if p.is_dir() and trained_configurations(p, checkpoint_name))
        if len(trained) != 1:
            names = ", ".join(p.name for p in trained) or "none"
            raise SamunetError(f"{root}: {len(trained)} trained datasets ({names}); choose one with -d")
        dataset_folder = trained[0]
    configurations = trained_configurations(dataset_folder, checkpoint_name)
    strategies = list(strategies or [])
    if prompted and len(strategies) > 1:
        raise SamunetError("prompted prediction uses one trained configuration: give one strategy with -s")
    reason = "given"
    if strategies and backbone and not prompted:
        names = [f"{s}__{backbone}" for s in strategies]
    else:
        candidates = {n for n in configurations
                      if is_prompted_configuration(n) == prompted
                      and (len(strategies) != 1 or n.startswith(f"{strategies[0]}__"))
                      and (not backbone or n.split(PROMPTED_SUFFIX)[0].endswith(f"__{backbone}"))}
        best_file = dataset_folder / BEST_CONFIGURATION_FILE
        best = read_json(best_file)["configuration"].split("+") if best_file.is_file() else None
        if best and set(best) <= candidates:
            names, reason = best, f"best configuration from {best_file.name}"
        elif len(candidates) == 1:
            names, reason = sorted(candidates), f"the only trained {'prompted ' if prompted else ''}configuration"
        else:
            kind = "prompted " if prompted else ""
            raise SamunetError(f"{dataset_folder}: {len(candidates)} trained {kind}configurations "
                               f"({', '.join(sorted(candidates)) or 'none'}); choose with -s and -b, or "
                               f"{'samunet_predict_from_modelfolder -m' if prompted else 'run samunet_find_best_configuration'}")
    for name in names:
        if name not in configurations:
            raise SamunetError(f"{dataset_folder / name}: no trained fold with {checkpoint_name}")
    if folds:
        chosen = [str(f) for f in folds]
    else:
        chosen = sorted(set.intersection(*(set(configurations[n]) for n in names)))
    description = f"{dataset_folder.name}/{'+'.join(names)}, folds {' '.join(chosen)} ({reason})"
    return [dataset_folder / n for n in names], chosen, description


def prompt_free_counterpart(prompted_folder, folds, checkpoint_name):
    """The configuration trained without prompts beside a prompted one (<strategy>__<backbone> next to
    <strategy>__<backbone>__prompts-<kind>), when it holds the checkpoint in every fold given and was
    trained with the same plan (so the same preprocessed volume suits both); else None."""
    prompted_folder = Path(prompted_folder)
    if not is_prompted_configuration(prompted_folder.name):
        return None
    folder = prompted_folder.parent / prompted_folder.name.split(PROMPTED_SUFFIX)[0]
    if not set(folds) <= set(trained_folds(folder, checkpoint_name)):
        return None
    if read_json(folder / PLANS_FILE) != read_json(prompted_folder / PLANS_FILE):
        return None
    return folder
