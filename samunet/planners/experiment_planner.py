"""The plan (samunet_plans.json): normalisation, slicing axis, target in-plane spacing, intensity mapping
into each backbone's input, per-backbone input size (from the median slice, backbone_sizing.input_size_for)
and batch size, and the default backbone.

All spatial lists are in numpy axis order (z, y, x) of the original arrays unless the key says `transposed`.
"""
import os
from pathlib import Path

import numpy as np

from samunet import __version__
from samunet.layout import DATA_IDENTIFIER
from samunet.models.backbone_registry import BACKBONES
from samunet.models.input_mapping import PROJECTED, EncoderInput
from samunet.planners.backbone_sizing import CPU_BATCH_SIZE, batch_size_for, input_size_for

# Neighbouring slices given to the encoder on 3D single-channel data, and neighbours each side whose
# embeddings the head fuses on 3D data (docs/benchmarks.md "3D context")
CONTEXT_SLICES = 0
FUSED_SLICES = 0
# How several channels reach the encoder (docs/benchmarks.md "Any number of channels")
CHANNEL_ENCODING = PROJECTED
TWO_D_SPACING = 999.0  # the slice spacing converters give 2D images (nnU-Net's convention)
ANISOTROPY_THRESHOLD = 3.0  # nnU-Net's: an axis this many times coarser than the others is 'anisotropic'
CHECKPOINTS_VAR = "SAMUNET_CHECKPOINTS"
# A class is one piece when, in every training case that holds it, its largest connected component holds at
# least this share of its voxels: annotation specks aside, a second piece (the other kidney, a second lesion)
# holds far more. `--prompts auto` draws boxes only around such a class's largest piece.
SINGLE_COMPONENT_SHARE = 0.95


def target_spacing_3d(spacings, shapes):
    """nnU-Net's full-resolution target spacing: the median, except for a strongly anisotropic axis with few
    voxels, which takes the 10th percentile of its spacings (but is never finer than the other axes)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, axis=0)
    target_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = target_shape[worst] * ANISOTROPY_THRESHOLD < min(target_shape[others])
    if aniso_spacing and aniso_voxels:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
    return target.tolist()


def slicing_transpose(target_spacing):
    """Slice along the lowest-resolution axis (first one on ties, as nnU-Net): it goes first."""
    axis = int(np.argmax(target_spacing))
    forward = [axis] + [a for a in range(3) if a != axis]
    return forward, [int(i) for i in np.argsort(forward)]


def _normalization_scheme(name, stats, use_nonzero_mask, zscore_window):
    """One channel's normalisation and the window (in normalised units) that is mapped to [0, 1]."""
    key = name.strip().lower()
    if key == "ct":
        lo, hi = stats["percentile_00_5"], stats["percentile_99_5"]
        mean, std = stats["mean"], max(stats["std"], 1e-8)
        return {
            "scheme": "ct",
            "clip": [lo, hi],
            "mean": mean,
            "std": std,
        }, [(lo - mean) / std, (hi - mean) / std]
    if key in ("rgb_to_0_1", "rgb"):
        return {"scheme": "rgb_to_0_1"}, [0.0, 1.0]
    if key == "nonorm":
        return {"scheme": "none"}, [stats["percentile_00_5"], stats["percentile_99_5"]]
    window = zscore_window["nonzero_mask" if use_nonzero_mask else "whole_image"]
    return {"scheme": "zscore", "use_nonzero_mask": use_nonzero_mask}, window


def is_2d(fingerprint, slicing_axis):
    """A single slice, or the spacing converters give 2D images: no neighbours to use."""
    slices = np.median([shape[slicing_axis] for shape in fingerprint["shapes_after_crop"]])
    spacing = np.median([s[slicing_axis] for s in fingerprint["spacings"]])
    return slices <= 1 or spacing >= TWO_D_SPACING


def context_slices_for(fingerprint, slicing_axis, wanted=CONTEXT_SLICES):
    """How many neighbours each side a slice's encoder input carries: `wanted` on 3D data with one channel;
    none for 2D data and for several channels, whose channels fill SAM's three inputs (a projection that
    also took neighbours would average the channels)."""
    if len(fingerprint["channel_names"]) > 1 or is_2d(fingerprint, slicing_axis):
        return 0
    return wanted


def channel_encoding_for(fingerprint, wanted=CHANNEL_ENCODING):
    """`wanted` for several channels; one channel is always projected (its own grey image already)."""
    return wanted if len(fingerprint["channel_names"]) > 1 else PROJECTED


def fused_slices_for(fingerprint, slicing_axis, wanted=FUSED_SLICES):
    """How many neighbours each side the head fuses: `wanted` on 3D data, any number of channels."""
    return 0 if is_2d(fingerprint, slicing_axis) else wanted


def default_backbone(checkpoints_dir):
    """vit_b when its official checkpoint is in SAMUNET_CHECKPOINTS, otherwise the bundled LiteMedSAM."""
    vit_b_file = BACKBONES["vit_b"].weights_file
    if checkpoints_dir and (Path(checkpoints_dir) / vit_b_file).is_file():
        return "vit_b", f"found {Path(checkpoints_dir) / vit_b_file}"
    where = f"{CHECKPOINTS_VAR}={checkpoints_dir}" if checkpoints_dir else f"{CHECKPOINTS_VAR} is not set"
    return "litemedsam", f"no {vit_b_file} ({where}); using the bundled LiteMedSAM weights"


def single_component_labels(fingerprint):
    """Label values that are one connected piece in the training labels (fingerprints from before the
    share was recorded: none)."""
    shares = fingerprint.get("min_largest_component_share_per_label") or {}
    return sorted(int(v) for v, share in shares.items() if share is not None and share >= SINGLE_COMPONENT_SHARE)


def plan_experiment(fingerprint, gpu_memory_gb, checkpoints_dir=None, context_slices=CONTEXT_SLICES,
                    fused_slices=FUSED_SLICES, channel_encoding=CHANNEL_ENCODING):
    """Build the plan dict from a fingerprint (see README 'samunet_plans.json')."""
    if checkpoints_dir is None:
        checkpoints_dir = os.environ.get(CHECKPOINTS_VAR)
    spacing3d = target_spacing_3d(fingerprint["spacings"], fingerprint["shapes_after_crop"])
    forward, backward = slicing_transpose(spacing3d)
    in_plane_axes = forward[1:]
    in_plane_spacing = [spacing3d[a] for a in in_plane_axes]
    resampled_shapes = [
        [round(shape[a] * spacing[a] / spacing3d[a]) for a in in_plane_axes]
        for shape, spacing in zip(fingerprint["shapes_after_crop"], fingerprint["spacings"])
    ]
    use_nonzero_mask = fingerprint["median_relative_size_after_cropping"] < 0.75

    normalization, windows = [], []
    for c, name in sorted(fingerprint["channel_names"].items(), key=lambda kv: int(kv[0])):
        scheme, window = _normalization_scheme(
            name,
            fingerprint["foreground_intensity_properties_per_channel"][c],
            use_nonzero_mask,
            fingerprint["zscored_foreground_window_per_channel"][c],
        )
        normalization.append({"channel": int(c), "channel_name": name, **scheme})
        windows.append([float(window[0]), float(window[1])])

    context = context_slices_for(fingerprint, forward[0], context_slices)
    median_in_plane_shape = [int(v) for v in np.median(resampled_shapes, axis=0)]
    backbones = {}
    for name, spec in BACKBONES.items():
        size = input_size_for(spec, median_in_plane_shape)
        batch = batch_size_for(spec, size, gpu_memory_gb)
        backbones[name] = {
            "input_size": size,
            **spec.default_normalization.fields(),
            "batch_size": batch,
            "cpu_batch_size": min(batch, CPU_BATCH_SIZE),
            "gpu_memory_gb": gpu_memory_gb,
            "estimated_memory_gb": round(spec.model_memory_gb + batch * spec.sample_memory_at(size), 2),
        }
    backbone, reason = default_backbone(checkpoints_dir)
    return {
        "plans_version": 1,
        "samunet_version": __version__,
        "dataset_name": fingerprint["dataset_name"],
        "data_identifier": DATA_IDENTIFIER,
        "axis_order": "z, y, x (numpy order of the original arrays)",
        "channel_names": fingerprint["channel_names"],
        "labels": fingerprint["labels"],
        "single_component_labels": single_component_labels(fingerprint),
        "target_spacing_3d": spacing3d,
        "slicing_axis": forward[0],
        "transpose_forward": forward,
        "transpose_backward": backward,
        "in_plane_spacing_transposed": in_plane_spacing,
        "median_in_plane_shape_transposed": median_in_plane_shape,
        "normalization": normalization,
        "intensity_mapping": {
            "description": "per channel: u = clip((x - lo) / (hi - lo), 0, 1) on normalised x, then "
            "input = input_range[0] + u * (input_range[1] - input_range[0]) per backbone; the model "
            "subtracts pixel_mean and divides by pixel_std",
            "window_per_channel": windows,
        },
        "encoder_input": {
            "description": "channel_encoding 'projected': the encoder's 3 input channels from each slice's "
            "planes (per channel, slices z - context_slices .. z + context_slices, edges replicated): input "
            "channel k = sum of projection[k][p] * windowed plane p; 'separate': each channel's windowed "
            "plane encoded alone in all 3 channels, the embeddings fused in the head. The head also fuses "
            "the embeddings of slices z - fused_slices .. z + fused_slices, each encoded alone",
            **EncoderInput.default(len(windows), context, channel_encoding_for(fingerprint, channel_encoding)).fields(),
            "fused_slices": fused_slices_for(fingerprint, forward[0], fused_slices),
        },
        "backbones": backbones,
        "default_backbone": backbone,
        "default_backbone_reason": reason,
    }
