"""From preprocessed-space probabilities to a label map file in the original geometry."""
import os

import numpy as np

from samunet.file_io import write_json
from samunet.imageio import write_image
from samunet.preprocessing.restore_geometry import original_geometry, restore_probabilities


def restore_and_write(case_id, probs, properties, out_folder, file_ending, save_probabilities=False):
    """probs (K+1, S, H, W) -> `{case_id}{file_ending}` (and `{case_id}.npz` with the probabilities)."""
    probs = restore_probabilities(probs, properties)
    probs /= probs.sum(axis=0, keepdims=True)  # interpolation keeps sums only approximately
    labels = probs.argmax(0).astype(np.uint8 if probs.shape[0] < 256 else np.uint16)
    out_folder.mkdir(parents=True, exist_ok=True)
    tmp = out_folder / f".{case_id}{file_ending}"
    write_image(labels, original_geometry(properties), tmp)
    os.replace(tmp, out_folder / f"{case_id}{file_ending}")  # never a half-written file under the final name
    if save_probabilities:
        np.savez_compressed(out_folder / f"{case_id}.npz", probabilities=probs.astype(np.float16))
        write_json({"geometry": properties["geometry"], "axis_order": "(class, z, y, x)"}, out_folder / f"{case_id}.json")
    return case_id
