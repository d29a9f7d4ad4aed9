"""Cropping to the nonzero region (as nnU-Net: any channel nonzero, holes filled) and pasting back."""
import numpy as np
from scipy.ndimage import binary_fill_holes


def nonzero_mask(data):
    """data: (C, Z, Y, X). True where any channel is nonzero, with enclosed holes filled."""
    return binary_fill_holes(np.any(data != 0, axis=0))


def bounding_box(mask):
    """[[lo, hi), ...] per axis of the True voxels; the whole array when nothing is True."""
    if not mask.any():
        return [[0, s] for s in mask.shape]
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def box_slices(box):
    return tuple(slice(lo, hi) for lo, hi in box)


def crop_to_box(array, box):
    """Crop the last len(box) axes."""
    return array[(Ellipsis, *box_slices(box))]


def paste_into(cropped, box, full_shape, fill=0):
    """Inverse of crop_to_box: place `cropped` in an array of `full_shape` (last axes), `fill` elsewhere."""
    lead = cropped.shape[: cropped.ndim - len(box)]
    out = np.full((*lead, *full_shape), fill, dtype=cropped.dtype)
    out[(Ellipsis, *box_slices(box))] = cropped
    return out
