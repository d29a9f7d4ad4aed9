"""`registration`: atlas-based label transfer. Each exemplar is registered to the unlabelled image (affine,
then a diffeomorphic demons refinement), its label is carried over with the transform, and with several
exemplars the carried labels are fused (majority vote or STAPLE). The synthetic case is the real unlabelled
image with the transferred label.

Quality: the correlation of each warped exemplar image with the target inside the region the label
covers (widened by a few voxels), averaged over exemplars and clipped to 0..1: where registration failed
the images disagree there. With several exemplars the case also records their agreement (label_fusion).
The first channel drives registration; volumes above MAX_VOXELS are registered on a shrunk grid, the
transform then applied at full resolution.
"""
import math

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import binary_dilation

from samunet.synthesis.label_fusion import agreement, fuse_labels
from samunet.synthesis.quality import local_correlation
from samunet.synthesis.volumes import SyntheticCase

DEFAULTS = {"fusion": "majority", "affine_iterations": 100, "demons_iterations": 100, "demons_smoothing": 1.0}
MAX_VOXELS = 128**3
QUALITY_MARGIN = 3  # voxels around the label where the warped and target images are compared

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints metric warnings to stderr for every level


def as_image(array, spacing):
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing[::-1]])  # numpy (S, H, W) is SimpleITK's (x, y, z) reversed
    return image


def _shrunk(image):
    factor = math.ceil((np.prod(image.GetSize()) / MAX_VOXELS) ** (1 / 3))
    if factor <= 1:
        return image
    smoothed = sitk.SmoothingRecursiveGaussian(image, [s * factor / 2 for s in image.GetSpacing()])
    return sitk.Shrink(smoothed, [factor] * 3)


def _affine(fixed, moving, iterations):
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, iterations)
    method.SetOptimizerScalesFromPhysicalShift()
    # Preprocessed images are cropped to the body, so their grid centres are a fair first guess.
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                              sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method.SetInitialTransform(start, inPlace=False)
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1, 0])
    return method.Execute(fixed, moving)


def register(fixed, moving, options):
    """The transform that maps points of `fixed` to `moving` (what Resample needs to warp moving onto fixed)."""
    fixed, moving = _shrunk(fixed), _shrunk(moving)
    affine = _affine(fixed, moving, options["affine_iterations"])
    moved = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, 0.0)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(options["demons_iterations"])
    demons.SetStandardDeviations(options["demons_smoothing"])
    field = demons.Execute(fixed, moved)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))])


def warp(image, onto, transform, is_label):
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.GetArrayFromImage(sitk.Resample(image, onto, transform, interpolator, 0))


def synthesize(target, exemplars, rng, options):
    options = {**DEFAULTS, **options}
    fixed = as_image(target.image[0].astype(np.float32), target.spacing)
    labels, correlations = [], []
    for exemplar in exemplars:
        moving = as_image(exemplar.image[0].astype(np.float32), exemplar.spacing)
        transform = register(fixed, moving, options)
        label = warp(as_image(exemplar.seg.astype(np.uint16), exemplar.spacing), fixed, transform, is_label=True)
        image = warp(moving, fixed, transform, is_label=False)
        region = binary_dilation(label > 0, iterations=QUALITY_MARGIN) if label.any() else np.ones(label.shape, bool)
        labels.append(label.astype(exemplar.seg.dtype))
        correlations.append(local_correlation(image, target.image[0], region))
    fused = fuse_labels(labels, options["fusion"])
    details = {"correlation_per_exemplar": correlations, "fusion": options["fusion"]}
    if len(labels) > 1:
        details["agreement"] = agreement(labels, fused)
    return SyntheticCase(seg=fused, quality=float(np.clip(np.mean(correlations), 0, 1)), details=details)
