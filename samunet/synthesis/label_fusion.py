"""Fusing the labels several exemplars carry onto one image, and how much they agree."""
import numpy as np
import SimpleITK as sitk

FUSION_RULES = ("majority", "staple")
_UNDECIDED = 65535  # above any label value a plan can hold


def fuse_labels(labels, rule="majority"):
    """labels: (S, H, W) integer maps on one grid -> one map. Voxels without a majority (ties) and
    voxels STAPLE leaves undecided become background."""
    if len(labels) == 1:
        return labels[0].copy()
    images = [sitk.GetImageFromArray(np.asarray(l, dtype=np.uint16)) for l in labels]
    fused = sitk.LabelVoting(images, _UNDECIDED) if rule == "majority" else sitk.MultiLabelSTAPLE(images, _UNDECIDED)
    fused = sitk.GetArrayFromImage(fused)
    fused[fused == _UNDECIDED] = 0
    return fused.astype(labels[0].dtype)


def foreground_dice(a, b):
    """Mean Dice over the foreground classes present in either map (1.0 when neither has any)."""
    classes = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()) - {0})
    if not classes:
        return 1.0
    scores = []
    for c in classes:
        x, y = a == c, b == c
        scores.append(2 * np.logical_and(x, y).sum() / (x.sum() + y.sum()))
    return float(np.mean(scores))


def agreement(labels, fused):
    """Mean Dice of each exemplar's label with the fused one: 1.0 when every exemplar says the same."""
    return float(np.mean([foreground_dice(l, fused) for l in labels]))
