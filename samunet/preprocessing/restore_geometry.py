"""Inverse of preprocess_case: from preprocessed slice space back to the original array and geometry.

un-resample in-plane -> paste into the uncropped volume -> undo the transpose. The result is in the
original (z, y, x) array order; write it with `original_geometry(properties)`.
"""
import numpy as np

from samunet.cropping import paste_into
from samunet.imageio import Geometry
from samunet.preprocessing.resampling import resample_labels, resample_probabilities


def original_geometry(properties):
    return Geometry.from_dict(properties["geometry"])


def restore_segmentation(seg, properties):
    """seg: (S, H, W) label map in preprocessed space -> (z, y, x) in the original array space."""
    seg = resample_labels(seg, properties["shape_after_crop"][1:])
    full = paste_into(seg, properties["crop_box_transposed"], properties["shape_after_transpose"], fill=0)
    return full.transpose(properties["transpose_backward"])


def restore_probabilities(probs, properties):
    """probs: (K, S, H, W) class probabilities (background first) -> (K, z, y, x).

    Outside the crop box (where the image was zero) everything is background.
    """
    probs = resample_probabilities(probs, properties["shape_after_crop"][1:])
    full = paste_into(probs, properties["crop_box_transposed"], properties["shape_after_transpose"], fill=0.0)
    outside = np.ones(properties["shape_after_transpose"], dtype=bool)
    outside[tuple(slice(lo, hi) for lo, hi in properties["crop_box_transposed"])] = False
    full[0][outside] = 1.0
    return full.transpose([0, *(a + 1 for a in properties["transpose_backward"])])
