"""Overlap and surface metrics of binary masks, with distances in mm from the voxel spacing.

Surfaces are the mask voxels with a 6-neighbour outside the mask; distances come from scipy's exact
Euclidean distance transform with `sampling=spacing`.

Conventions (reference = ground truth):
- reference and prediction both empty: every metric is NaN (nnU-Net's rule: excluded from means);
- one of them empty, the other not (a missed structure, or false positives only): Dice 0, IoU 0, NSD 0,
  HD95 = the volume's diagonal in mm (the worst case; it counts in the means).
HD95 is the 95th percentile of both directed surface-distance sets pooled; NSD (surface Dice at tolerance
tau) is the fraction of both surfaces' voxels within tau mm of the other surface.
"""
import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure


def surface(mask):
    if not mask.any():
        return mask
    inner = binary_erosion(mask, structure=generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~inner


def surface_distances(from_surface, to_surface, spacing):
    """Distance (mm) from each voxel of `from_surface` to the nearest voxel of `to_surface`."""
    return distance_transform_edt(~to_surface, sampling=spacing)[from_surface]


def binary_metrics(prediction, reference, spacing, nsd_tolerance=1.0):
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    p, r = prediction.sum(), reference.sum()
    if p == 0 and r == 0:
        return {k: float("nan") for k in ("Dice", "IoU", "HD95", "NSD")} | {"n_pred": 0, "n_ref": 0}
    tp = np.logical_and(prediction, reference).sum()
    result = {"Dice": 2 * tp / (p + r), "IoU": tp / (p + r - tp), "n_pred": int(p), "n_ref": int(r)}
    if p == 0 or r == 0:
        diagonal = float(np.sqrt(np.sum((np.array(prediction.shape) * np.array(spacing)) ** 2)))
        return result | {"HD95": diagonal, "NSD": 0.0}
    sp, sr = surface(prediction), surface(reference)
    d_pr, d_rp = surface_distances(sp, sr, spacing), surface_distances(sr, sp, spacing)
    pooled = np.concatenate([d_pr, d_rp])
    nsd = ((d_pr <= nsd_tolerance).sum() + (d_rp <= nsd_tolerance).sum()) / pooled.size
    return result | {"HD95": float(np.percentile(pooled, 95)), "NSD": float(nsd)}
