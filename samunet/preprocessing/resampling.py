"""In-plane resampling of slice stacks (axis 0 is the slicing axis and is never touched).

Images use cubic splines, label maps linear interpolation of each class's one-hot mask (as nnU-Net), so
that thin structures survive; probabilities use linear interpolation.
"""
import numpy as np
from scipy.ndimage import zoom


def in_plane_shape(shape_hw, spacing_hw, target_spacing_hw):
    return [max(1, int(round(s * sp / t))) for s, sp, t in zip(shape_hw, spacing_hw, target_spacing_hw)]


def _zoom_stack(stack, new_hw, order):
    """stack: (..., S, H, W) -> (..., S, h, w). Slices are independent (zoom factor 1 on S)."""
    old_hw = stack.shape[-2:]
    if tuple(old_hw) == tuple(new_hw):
        return stack
    factors = [1.0] * (stack.ndim - 2) + [n / o for n, o in zip(new_hw, old_hw)]
    out = zoom(stack, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    assert tuple(out.shape[-2:]) == tuple(new_hw), (out.shape, new_hw)
    return out


def resample_images(data, new_hw):
    """data: (C, S, H, W) float -> (C, S, h, w)."""
    return np.stack([_zoom_stack(channel, new_hw, order=3) for channel in data]).astype(np.float32, copy=False)


def resample_labels(seg, new_hw):
    """seg: (S, H, W) integer label map -> (S, h, w), class by class."""
    if tuple(seg.shape[-2:]) == tuple(new_hw):
        return seg
    out = np.zeros((seg.shape[0], *new_hw), dtype=seg.dtype)
    for label in np.unique(seg):
        if label == 0:
            continue
        mask = _zoom_stack((seg == label).astype(np.float32), new_hw, order=1)
        out[mask >= 0.5] = label
    return out


def resample_probabilities(probs, new_hw):
    """probs: (K, S, H, W) -> (K, S, h, w), linear."""
    return np.stack([_zoom_stack(p.astype(np.float32, copy=False), new_hw, order=1) for p in probs])
