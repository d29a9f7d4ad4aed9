"""From preprocessed-space probabilities to a label map file in the original geometry."""
import zipfile

import numpy as np

from samunet.errors import SamunetError
from samunet.file_io import atomic_write, write_json
from samunet.imageio import write_image
from samunet.preprocessing.restore_geometry import original_geometry, restore_probabilities


def restored_labels(probs, properties):
    """probs (K+1, S, H, W) in preprocessed space -> (probabilities (K+1, z, y, x), label map (z, y, x)) in
    the original array space."""
    probs = restore_probabilities(probs, properties)
    probs /= probs.sum(axis=0, keepdims=True)  # interpolation keeps sums only approximately
    return probs, probs.argmax(0).astype(np.uint8 if probs.shape[0] < 256 else np.uint16)


def restore_and_write(case_id, probs, properties, out_folder, file_ending, save_probabilities=False):
    """probs (K+1, S, H, W) -> `{case_id}{file_ending}` (and `{case_id}.npz` with the probabilities)."""
    probs, labels = restored_labels(probs, properties)
    if save_probabilities:  # before the label map: a case with its label map written is complete
        with atomic_write(out_folder / f"{case_id}.npz", check_probabilities) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, probabilities=probs.astype(np.float16))
        write_json({"geometry": properties["geometry"], "axis_order": "(class, z, y, x)"}, out_folder / f"{case_id}.json")
    write_image(labels, original_geometry(properties), out_folder / f"{case_id}{file_ending}")
    return case_id


def check_probabilities(path):
    try:
        with np.load(path) as saved:
            saved["probabilities"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise SamunetError(f"{path}: written incompletely") from None
