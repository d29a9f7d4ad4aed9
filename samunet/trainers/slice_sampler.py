"""Which slices a training epoch sees: random (case, slice) pairs with foreground oversampling.

With a synthetic set (synthesis/), each slice comes from a synthetic case with probability
`synthetic_fraction`, the case drawn by the set's quality weights; otherwise from a real case.

Batches of epoch e come from a generator seeded with (seed, e), so a run resumed at an epoch boundary
draws exactly the batches an uninterrupted run would, and every DDP rank draws the same global batches
(each then keeps its own share).
"""
from dataclasses import dataclass

import numpy as np

from samunet.preprocessing.storage import load_properties

OVERSAMPLE_FOREGROUND = 1 / 3  # nnU-Net's 33%


@dataclass(frozen=True)
class SliceSpec:
    case_id: str
    slice_index: int
    augmentation_seed: int


class SliceSampler:
    def __init__(self, data_folder, case_ids, seed=12345, oversample=OVERSAMPLE_FOREGROUND, synthetic=None,
                 synthetic_fraction=0.0):
        self.case_ids = list(case_ids)
        self.seed = seed
        self.oversample = oversample
        self.synthetic, self.synthetic_fraction = synthetic, synthetic_fraction  # a SyntheticSet or None
        self.num_slices, self.class_slices = {}, {}
        cases = [(data_folder, c) for c in self.case_ids] + ([(synthetic.folder, c) for c in synthetic.case_ids]
                                                             if synthetic else [])
        for folder, case_id in cases:
            props = load_properties(folder, case_id)
            self.num_slices[case_id] = props["shape_after_resampling"][0]
            self.class_slices[case_id] = {int(c): s for c, s in props.get("class_slices", {}).items() if s}

    def _force_foreground(self, rng, j, batch_size):
        if batch_size > 2:  # nnU-Net: the last third of each batch holds foreground
            return j >= round(batch_size * (1 - self.oversample))
        return rng.random() < self.oversample

    def _case(self, rng):
        if self.synthetic is not None and self.synthetic_fraction > 0 and rng.random() < self.synthetic_fraction:
            return self.synthetic.case_ids[rng.choice(len(self.synthetic.case_ids), p=self.synthetic.weights)]
        return self.case_ids[rng.integers(len(self.case_ids))]

    def _draw(self, rng, force_foreground):
        case_id = self._case(rng)
        classes = self.class_slices[case_id]
        if force_foreground and classes:
            cls = sorted(classes)[rng.integers(len(classes))]
            slice_index = classes[cls][rng.integers(len(classes[cls]))]
        else:
            slice_index = int(rng.integers(self.num_slices[case_id]))
        return SliceSpec(case_id, int(slice_index), int(rng.integers(2**31)))

    def epoch_batches(self, epoch, num_batches, batch_size):
        rng = np.random.default_rng([self.seed, epoch])
        return [
            [self._draw(rng, self._force_foreground(rng, j, batch_size)) for j in range(batch_size)]
            for _ in range(num_batches)
        ]


def validation_slices(data_folder, case_ids, max_slices, seed=0):
    """A fixed set of validation slices: all with foreground first, then others, at most `max_slices`
    (None: every slice)."""
    rng = np.random.default_rng(seed)
    foreground, background = [], []
    for case_id in case_ids:
        props = load_properties(data_folder, case_id)
        fg = sorted({s for slices in props.get("class_slices", {}).values() for s in slices})
        foreground += [SliceSpec(case_id, s, 0) for s in fg]
        background += [SliceSpec(case_id, s, 0) for s in range(props["shape_after_resampling"][0]) if s not in set(fg)]
    if max_slices is None:
        return foreground + background
    pick = lambda items, n: [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False))] if n < len(items) else items
    fg = pick(foreground, min(len(foreground), max_slices * 2 // 3 if background else max_slices))
    return fg + pick(background, min(len(background), max_slices - len(fg)))
