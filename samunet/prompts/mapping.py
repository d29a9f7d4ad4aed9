"""Prompts in the original image's coordinates -> prompts on preprocessed slices at the model's input size.

The same steps images take (preprocessing/preprocess_case.py): transpose to the plan's slicing axis, crop
to the nonzero box, resample in-plane, resize to the input size. Every resize here aligns pixel edges
(scipy's grid mode, bilinear without corner alignment), so a pixel edge at position e of the cropped
slice lies at e * S / E at input size S for an axis of E cropped pixels.

Boxes are voxel index ranges, inclusive at both ends ([x0, y0, z0, x1, y1, z1]); a 3D box prompts every
preprocessed slice it covers, each with the in-plane box it covers there (MedSAM's 3D protocol, the end
slices included: a box's last slice is as much the structure's as its first). A point prompts the one
slice it lies on. Parts outside the crop box (where every channel is zero) prompt nothing.
"""
import numpy as np

from samunet.prompts.derivation import Prompt


def _transposed_ranges(box_xyz, properties):
    """Inclusive voxel box (x0, y0, z0, x1, y1, z1) -> edge ranges [lo, hi) per transposed array axis."""
    x0, y0, z0, x1, y1, z1 = box_xyz
    lo, hi = (z0, y0, x0), (z1 + 1, y1 + 1, x1 + 1)  # array order (z, y, x)
    forward = properties["transpose_forward"]
    return [(lo[a], hi[a]) for a in forward]


def box_prompts(box_xyz, label, properties, input_size, points=()):
    """One Prompt per preprocessed slice the box covers."""
    ranges = _transposed_ranges(box_xyz, properties)
    crop = properties["crop_box_transposed"]
    in_plane = []
    for (lo, hi), (c_lo, c_hi) in zip(ranges[1:], crop[1:]):
        a, b = np.clip(lo, c_lo, c_hi) - c_lo, np.clip(hi, c_lo, c_hi) - c_lo
        if b <= a:
            return []
        scale = input_size / (c_hi - c_lo)
        in_plane.append((a * scale, max(a * scale, b * scale - 1)))
    (row0, row1), (col0, col1) = in_plane
    box = (float(col0), float(row0), float(col1), float(row1))
    (s_lo, s_hi), (c_lo, c_hi) = ranges[0], crop[0]
    return [Prompt(s - c_lo, label, box, points.get(s - c_lo, ()) if isinstance(points, dict) else points)
            for s in range(max(s_lo, c_lo), min(s_hi, c_hi))]


def point_on_slice(point_xyz, positive, properties, input_size):
    """(slice index, (x, y, positive)) of a voxel point, or None outside the crop box."""
    x, y, z = point_xyz
    transposed = [(z, y, x)[a] for a in properties["transpose_forward"]]
    crop = properties["crop_box_transposed"]
    s = int(round(transposed[0])) - crop[0][0]
    if not 0 <= s < crop[0][1] - crop[0][0]:
        return None
    in_plane = []
    for t, (c_lo, c_hi) in zip(transposed[1:], crop[1:]):
        if not c_lo - 0.5 <= t <= c_hi - 0.5:
            return None
        in_plane.append((t + 0.5 - c_lo) * input_size / (c_hi - c_lo) - 0.5)  # voxel centre -> pixel index
    row, col = in_plane
    return s, (float(col), float(row), int(positive))


def world_to_voxel(point_mm, geometry):
    """A physical point (x, y, z) in mm -> continuous voxel index (x, y, z) of an image with `geometry`."""
    direction = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    offset = np.asarray(point_mm, dtype=float) - np.asarray(geometry.origin, dtype=float)
    return np.linalg.solve(direction * np.asarray(geometry.spacing, dtype=float), offset)


def class_prompts(label, boxes, points, properties, input_size):
    """All prompts of one class: voxel boxes (3D, inclusive) and points ((x, y, z, 1 or 0) voxel). Points
    join the box prompts of their slice; a slice with points and no box gets a point-only prompt."""
    by_slice = {}
    for point in points:
        placed = point_on_slice(point[:3], point[3], properties, input_size)
        if placed:
            by_slice.setdefault(placed[0], []).append(placed[1])
    by_slice = {s: tuple(p) for s, p in by_slice.items()}
    prompts = []
    for box in boxes:
        prompts += box_prompts(box, label, properties, input_size, by_slice)
    boxed = {p.slice_index for p in prompts}
    prompts += [Prompt(s, label, None, p) for s, p in sorted(by_slice.items()) if s not in boxed]
    return prompts
