"""`prediction_info.json`, which samunet_predict writes beside its label maps: the model, its folds, the
mirroring it did and where its prompts came from, with their provenance (inference/prompt_sources.py).
Its presence also marks a folder as samunet_predict's own (it may write there again)."""
from pathlib import Path

from samunet.file_io import read_json

INFO_FILE = "prediction_info.json"
NO_PROMPTS = {"source": "none", "provenance": "none"}


def provenance_of(prediction_folder):
    """The prompt provenance recorded for a folder of predictions: none, user, model or ground_truth;
    None when samunet_predict did not write the folder."""
    info = Path(prediction_folder) / INFO_FILE
    if not info.is_file():
        return None
    return read_json(info).get("prompts", NO_PROMPTS)["provenance"]
