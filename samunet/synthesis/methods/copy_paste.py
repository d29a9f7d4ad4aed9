"""`copy_paste`: an exemplar's labelled structures, elastically deformed, pasted into the unlabelled image.

Where: at the position the structures have in their own exemplar, relative to the volume's extent (the
preprocessed volumes are cropped to the body, so this lands at the same anatomy), jittered a little.
The pasted patch is matched to the target's intensity statistics under it and blended through a soft
mask, so no hard edge marks it. The label is the pasted structures; the rest of the target is unlabelled
background (so a target's own structure where nothing was pasted is label noise).

Quality: the correlation of the pasted patch with what it covered, clipped to 0..1: a paste onto similar
anatomy scores high.
"""
import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter, map_coordinates

from samunet.synthesis.quality import local_correlation
from samunet.synthesis.volumes import SyntheticCase

DEFAULTS = {"margin": 4, "elastic_voxels": 2.0, "elastic_smoothing": 3.0, "jitter": 0.05, "blend_sigma": 1.0}


def _structure_box(seg, margin):
    coords = np.argwhere(seg > 0)
    low = np.maximum(coords.min(0) - margin, 0)
    high = np.minimum(coords.max(0) + margin + 1, seg.shape)
    return low, high


def _elastic(image, seg, rng, magnitude, smoothing):
    """Deform a patch (C, ...) and its label with one smooth random displacement field."""
    shape = seg.shape
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis in range(3):
        field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), smoothing)
        peak = np.abs(field).max()
        coords.append(grid[axis] + (field / peak * magnitude if peak > 0 else 0))
    image = np.stack([map_coordinates(c, coords, order=1, mode="nearest") for c in image])
    seg = map_coordinates(seg, coords, order=0, mode="nearest")
    return image, seg


def synthesize(target, exemplars, rng, options):
    options = {**DEFAULTS, **options}
    exemplar = exemplars[int(rng.integers(len(exemplars)))]
    if not (exemplar.seg > 0).any():
        return SyntheticCase(seg=np.zeros(target.image.shape[1:], exemplar.seg.dtype), quality=0.0,
                             details={"exemplar": exemplar.case_id, "reason": "exemplar has no foreground"})
    low, high = _structure_box(exemplar.seg, options["margin"])
    box = tuple(slice(a, b) for a, b in zip(low, high))
    image, seg = _elastic(exemplar.image[(slice(None), *box)].astype(np.float32), exemplar.seg[box], rng,
                          options["elastic_voxels"], options["elastic_smoothing"])

    # The patch's place in the target: same relative position, jittered, kept inside the volume.
    target_shape = np.array(target.image.shape[1:])
    size = np.minimum(high - low, target_shape)
    image, seg = image[(slice(None), *(slice(0, s) for s in size))], seg[tuple(slice(0, s) for s in size)]
    centre = (low + high) / 2 / np.array(exemplar.seg.shape)
    centre = centre + rng.normal(0, options["jitter"], 3)
    start = np.clip(np.round(centre * target_shape - size / 2).astype(int), 0, target_shape - size)
    place = tuple(slice(a, a + s) for a, s in zip(start, size))

    result = target.image.copy()
    covered = result[(slice(None), *place)]
    for c in range(image.shape[0]):  # match the patch to the target's statistics under it
        std = image[c].std()
        image[c] = (image[c] - image[c].mean()) / (std if std > 0 else 1) * covered[c].std() + covered[c].mean()
    alpha = gaussian_filter(binary_dilation(seg > 0, iterations=1).astype(np.float32), options["blend_sigma"])
    alpha = np.clip(np.maximum(alpha, seg > 0), 0, 1)  # labelled voxels are fully the exemplar's
    quality = local_correlation(image[0], covered[0], alpha > 0.05)
    result[(slice(None), *place)] = alpha * image + (1 - alpha) * covered
    label = np.zeros(target.image.shape[1:], dtype=exemplar.seg.dtype)
    label[place] = seg
    return SyntheticCase(seg=label, image=result, quality=float(np.clip(quality, 0, 1)),
                         details={"exemplar": exemplar.case_id, "placed_at": start.tolist()})
