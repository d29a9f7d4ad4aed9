"""Prompts derived from label maps at the model's input size: what prompted training shows the model, and
what a mask (a coarse segmentation, another tool's output, a first model's prediction) becomes at prediction.

A prompt is one class on one slice: a box and/or points. Boxes follow SAM's convention (x0, y0, x1, y1: the
first and last pixel column and row covered, so a one-pixel structure has x0 == x1). Boxes are per class,
not per connected component: a class split in two parts on a slice gets one box around both, as MedSAM's
training does per label. Points follow SAM too: (x, y) pixel indices, label 1 inside the structure, 0 outside.

Training draws (rng given): each box side moves outwards by a random 0..J pixels (MedSAM), J a pixel count
or a fraction of the box's extent on that axis (finetune-SAM's rule, "10%"); the positive point is drawn
with probability proportional to the distance to the structure's border (interior points, never on the
edge unless the structure is that thin); a negative point, with probability `negative_probability`, is
drawn among the background pixels inside the jittered box (none when the box holds no background).
Without an rng (prompts derived from a mask at prediction, and training's validation) each box side moves
outwards by `growth` times the largest jitter: by default half, the mean move training showed (a box drawn
exactly around a mask sits at the tight edge of what the model learned from, where it tends to cut the
structure short); prediction grows boxes from a model's own masks further (inference/prompt_sources.py).
The point is then the pixel farthest from the border.
"""
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from samunet.errors import SamunetError

KINDS = ("box", "point", "box+point")
MEDSAM_JITTER_AT_256 = 5  # MedSAM's box shift: 20 pixels at 1024, 5 at 256


@dataclass(frozen=True)
class Prompt:
    slice_index: int  # in the batch (training) or in the preprocessed volume (prediction)
    label: int  # class value
    box: tuple = None  # (x0, y0, x1, y1) in input pixels
    points: tuple = ()  # ((x, y, 1 or 0), ...) in input pixels


@dataclass(frozen=True)
class PromptRule:
    kind: str = "box"
    box_jitter: str = None  # "5" pixels or "10%" of the extent; None: MedSAM's, scaled to the input size
    negative_probability: float = 0.5  # chance of a negative point, for kinds with points

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SamunetError(f"prompt kind '{self.kind}': choose one of {', '.join(KINDS)}")
        parse_jitter(self.box_jitter)

    @property
    def boxes(self):
        return "box" in self.kind

    @property
    def points(self):
        return "point" in self.kind

    def jitter(self, extent, input_size):
        """Largest outward move of a box side, in pixels, for a box `extent` pixels long on that axis."""
        value, relative = parse_jitter(self.box_jitter)
        if value is None:
            return max(1, round(MEDSAM_JITTER_AT_256 * input_size / 256))
        return value * extent if relative else value


def parse_jitter(text):
    """'5' -> (5.0, False) pixels; '10%' -> (0.1, True) of the extent; None -> (None, False): the default."""
    if text is None:
        return None, False
    relative = str(text).endswith("%")
    try:
        value = float(str(text)[:-1] if relative else text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and np.isfinite(value)):
        raise SamunetError(f"box jitter '{text}': give pixels (e.g. 5) or a percentage of the box (e.g. 10%)")
    return (value / 100, True) if relative else (value, False)


def box_of(mask):
    """(x0, y0, x1, y1) of the True pixels of a (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))


MEAN_GROWTH = 0.5  # without an rng, box sides move out by this share of the jitter: training's mean move


def jittered(box, shape, size, rule, rng=None, growth=MEAN_GROWTH):
    """Each side of the box moved outwards by a random 0..jitter (rng), or by `growth` times the jitter
    (no rng), kept inside the (H, W) `shape`."""
    x0, y0, x1, y1 = box
    jx, jy = rule.jitter(x1 - x0 + 1, size), rule.jitter(y1 - y0 + 1, size)
    shares = rng.uniform(0, 1, 4) if rng is not None else np.full(4, float(growth))
    moves = shares * np.array([jx, jy, jx, jy])
    h, w = shape
    return (max(0.0, x0 - moves[0]), max(0.0, y0 - moves[1]), min(w - 1.0, x1 + moves[2]), min(h - 1.0, y1 + moves[3]))


def interior_point(mask, rng=None):
    """(x, y) inside the mask: the deepest pixel, or (rng) one drawn with probability ~ depth."""
    depth = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    else:
        flat = depth.ravel()
        y, x = np.unravel_index(int(rng.choice(flat.size, p=flat / flat.sum())), depth.shape)
    return int(x), int(y)


def negative_point(mask, box, rng):
    """(x, y) of a background pixel inside the box, or None when the box holds no background."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    ys, xs = np.nonzero(~mask[y0 : y1 + 1, x0 : x1 + 1])
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return int(xs[i] + x0), int(ys[i] + y0)


def prompts_for_mask(mask, slice_index, label, rule, rng=None, size=None, growth=MEAN_GROWTH):
    """The prompt for one structure: a non-empty (H, W) mask, square at input size unless `size` (which
    scales the default jitter) is given."""
    size = size or mask.shape[-1]
    box = box_of(mask)
    box = jittered(box, mask.shape, size, rule, rng, growth)
    points = ()
    if rule.points:
        points = ((*interior_point(mask, rng), 1),)
        if rng is not None and rng.uniform() < rule.negative_probability:
            negative = negative_point(mask, box, rng)
            points += ((*negative, 0),) if negative else ()
    return Prompt(slice_index, label, tuple(float(v) for v in box) if rule.boxes else None, points)


def prompts_from_labels(labels, rule, rng=None, label_values=None, growth=MEAN_GROWTH):
    """labels (B, H, W) integer array -> one Prompt per slice and class present (classes in `label_values`,
    default every foreground value). Empty slices get none."""
    prompts = []
    for b, slice_labels in enumerate(labels):
        present = np.unique(slice_labels)
        for value in present[present != 0]:
            if label_values is None or int(value) in label_values:
                prompts.append(prompts_for_mask(slice_labels == value, b, int(value), rule, rng, growth=growth))
    return prompts
