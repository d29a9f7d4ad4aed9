"""Augmentation of one 2D slice at its preprocessed size with batchgenerators (nnU-Net 2D-like settings).

Spatial (rotation, scaling) with cubic images / nearest labels, then Gaussian noise, Gaussian blur,
multiplicative brightness, contrast, gamma, and mirroring along both in-plane axes. batchgenerators draws
from numpy's and Python's global generators, so both are seeded per slice (reproducible in any worker).
"""
import random

import numpy as np
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform

from samunet.models.mirroring_record import MIRROR_AXES

_INTENSITY = Compose([
    GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_sample=0.1),
    GaussianBlurTransform((0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5),
    BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
    ContrastAugmentationTransform(p_per_sample=0.15),
    GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
    GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
    MirrorTransform(axes=MIRROR_AXES),
])


def augment_slice(image, label, seed):
    """image (C, H, W) float32, label (H, W) -> augmented copies of the same shapes."""
    np.random.seed(seed)
    random.seed(seed)  # batchgenerators' blur draws its sigma from the random module
    spatial = SpatialTransform(
        patch_size=image.shape[1:], patch_center_dist_from_border=None, do_elastic_deform=False,
        do_rotation=True, angle_x=(-np.pi, np.pi), do_scale=True, scale=(0.7, 1.4),
        border_mode_data="constant", order_data=3, border_mode_seg="constant", order_seg=0,
        random_crop=False, p_rot_per_sample=0.2, p_scale_per_sample=0.2,
    )
    batch = {"data": image[None].astype(np.float32), "seg": label[None, None].astype(np.float32)}
    batch = _INTENSITY(**spatial(**batch))
    return batch["data"][0].astype(np.float32), np.rint(batch["seg"][0, 0]).astype(np.int64)
