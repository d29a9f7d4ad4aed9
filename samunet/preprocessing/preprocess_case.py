"""One case forward through preprocessing: transpose -> crop to nonzero -> normalise -> in-plane resample.

The returned properties hold everything needed to invert each step (see restore_geometry.py).
"""
import numpy as np

from samunet.cropping import bounding_box, crop_to_box, nonzero_mask
from samunet.preprocessing.normalization import normalize_channel
from samunet.preprocessing.resampling import in_plane_shape, resample_images, resample_labels


def class_slices(seg, label_values):
    """For each foreground class, the slice indices that contain it (used for foreground oversampling)."""
    present = {int(v) for v in np.unique(seg)}
    per_slice = [set(np.unique(s).tolist()) for s in seg] if present - {0} else []
    return {
        str(c): [i for i, labels in enumerate(per_slice) if c in labels] if c in present else []
        for c in label_values
        if c != 0
    }


def preprocess_case(images, seg, geometry, plan):
    """images: list of (z, y, x) arrays (one per channel); seg: (z, y, x) ints or None.

    Returns data (C, S, H, W) float32, seg (S, H, W) or None, and the properties dict.
    """
    forward = plan["transpose_forward"]
    data = np.stack(images).astype(np.float32, copy=False).transpose([0, *(a + 1 for a in forward)])
    spacing_zyx = geometry.spacing_zyx
    spacing_t = [spacing_zyx[a] for a in forward]
    shape_t = list(data.shape[1:])
    if seg is not None:
        seg = seg.transpose(forward)

    mask = nonzero_mask(data)
    box = bounding_box(mask)
    data, mask = crop_to_box(data, box), crop_to_box(mask, box)
    if seg is not None:
        seg = crop_to_box(seg, box)
    shape_cropped = list(data.shape[1:])

    norm_stats = []
    for c, scheme in enumerate(plan["normalization"]):
        data[c], stats = normalize_channel(data[c], scheme, mask)
        norm_stats.append(stats)

    new_hw = in_plane_shape(shape_cropped[1:], spacing_t[1:], plan["in_plane_spacing_transposed"])
    data = resample_images(data, new_hw)
    if seg is not None:
        seg = resample_labels(seg, new_hw)

    properties = {
        "geometry": geometry.to_dict(),
        "original_shape": list(images[0].shape),
        "transpose_forward": list(forward),
        "transpose_backward": list(plan["transpose_backward"]),
        "shape_after_transpose": shape_t,
        "spacing_after_transpose": list(spacing_t),
        "crop_box_transposed": box,
        "shape_after_crop": shape_cropped,
        "shape_after_resampling": [shape_cropped[0], *new_hw],
        "spacing_after_resampling": [spacing_t[0], *plan["in_plane_spacing_transposed"]],
        "normalization_stats": norm_stats,
    }
    if seg is not None:
        properties["class_slices"] = class_slices(seg, plan["labels"].values())
    return data, seg, properties


def labels_like_case(seg, properties):
    """A (z, y, x) label map in the original array space of a preprocessed case (a mask given at
    prediction) -> (S, H, W) in its preprocessed space: the case's transpose, crop and resampling."""
    seg = crop_to_box(seg.transpose(properties["transpose_forward"]), properties["crop_box_transposed"])
    return resample_labels(seg, properties["shape_after_resampling"][1:])
