"""Connected components of label maps (26-connectivity in 3D), for every stage that asks about them: the
fingerprint (is a class one piece in the training labels?), `--prompts auto` (boxes only around a
single-piece class's largest piece) and postprocessing (keep the largest piece)."""
import numpy as np
from scipy.ndimage import generate_binary_structure, label

_STRUCTURE = generate_binary_structure(3, 3)


def _components(mask):
    components, count = label(mask, structure=_STRUCTURE)
    return components, np.bincount(components.ravel())[1:] if count else np.zeros(0, np.int64)


def largest_component_share(mask):
    """Share of the True voxels of a 3D mask in its largest connected component; None for an empty mask."""
    _, sizes = _components(mask)
    return float(sizes.max() / sizes.sum()) if sizes.size else None


def keep_largest_component(seg, labels):
    """A copy of the label map in which each class of `labels` keeps only its largest connected component
    (the rest becomes background)."""
    seg = seg.copy()
    for c in labels:
        components, sizes = _components(seg == c)
        if sizes.size > 1:
            seg[(components > 0) & (components != np.argmax(sizes) + 1)] = 0
    return seg
