"""Overlay PNGs for eyeballing predictions: image | ground truth | prediction on one slice.

The slice shown is the one with the most reference foreground along the plan's slicing axis, drawn
with the voxel spacing as aspect ratio so anisotropic data are not stretched.
"""
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from samunet.file_io import atomic_write  # noqa: E402
from samunet.imageio import read_image  # noqa: E402

# Distinct colours for up to ten labels (tab10 without its grey), repeated beyond that.
LABEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                 "#17becf", "#aec7e8"]


def _window(image):
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def _label_cmap(num_labels):
    colours = [(0, 0, 0, 0)] + [matplotlib.colors.to_rgba(LABEL_COLOURS[i % len(LABEL_COLOURS)], 0.55)
                                for i in range(num_labels)]
    return ListedColormap(colours)


def write_overlay(image_path, reference_path, prediction_path, slicing_axis, out_png, title=""):
    """slicing_axis: numpy axis (z, y, x order of the files) along which slices are taken."""
    image, geometry = read_image(image_path)
    reference, _ = read_image(reference_path)
    prediction, _ = read_image(prediction_path)
    reference, prediction = reference.astype(np.int64), prediction.astype(np.int64)
    other_axes = [a for a in range(3) if a != slicing_axis]
    foreground = (reference > 0).sum(axis=tuple(other_axes))
    index = int(np.argmax(foreground)) if foreground.any() else image.shape[slicing_axis] // 2
    take = lambda a: np.take(a, index, axis=slicing_axis)  # noqa: E731
    spacing_zyx = geometry.spacing[::-1]
    aspect = spacing_zyx[other_axes[0]] / spacing_zyx[other_axes[1]]
    num_labels = int(max(reference.max(), prediction.max(), 1))
    cmap = _label_cmap(num_labels)

    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    background = _window(take(image).astype(np.float32))
    for ax, (name, labels) in zip(axes, (("image", None), ("ground truth", reference), ("prediction", prediction))):
        ax.imshow(background, cmap="gray", aspect=aspect, interpolation="nearest")
        if labels is not None:
            ax.imshow(take(labels), cmap=cmap, vmin=0, vmax=num_labels, aspect=aspect, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title} (slice {index} of axis {slicing_axis})".strip())
    fig.tight_layout()
    with atomic_write(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return index
