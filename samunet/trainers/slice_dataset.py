"""Reads (and augments) preprocessed slices: SliceSpec -> (image planes (P, H, W), label (H, W)) numpy arrays.

The planes are what the plan's encoder input takes (models/input_mapping.py: each channel, with its
neighbouring slices when the plan gives context), for a model that fuses neighbouring slices those of
each slice of its stack; augmentation treats them as channels, so every plane gets the same spatial
transform. Slices keep their preprocessed size; resizing to the backbone's input
size happens on the device.
"""
import numpy as np
from torch.utils.data import Dataset

from samunet.preprocessing.storage import open_case
from samunet.trainers.augmentation import augment_slice


class SliceDataset(Dataset):
    def __init__(self, data_folder, encoder_input, augment=True, other_folders=None, fused_slices=0):
        self.data_folder = data_folder
        self.encoder_input = encoder_input
        self.fused_slices = fused_slices
        self.other_folders = other_folders or {}  # case id -> folder, for cases kept elsewhere (synthetic ones)
        self.augment = augment
        self._open = {}  # lazily opened blosc2 arrays, per process

    def _arrays(self, case_id):
        if case_id not in self._open:
            data, seg, _ = open_case(self.other_folders.get(case_id, self.data_folder), case_id)
            self._open[case_id] = (data, seg)
        return self._open[case_id]

    def __getitem__(self, spec):
        data, seg = self._arrays(spec.case_id)
        image = self.encoder_input.stack(data, spec.slice_index, self.fused_slices)
        if seg is None:  # an unlabelled case (pretraining): the image alone
            return image, None
        label = self.label(spec)
        if self.augment:
            image, label = augment_slice(image, label, spec.augmentation_seed)
        return image, label

    def label(self, spec):
        """The slice's label as preprocessed, without reading its image planes (cached training reads
        embeddings, not images)."""
        return np.asarray(self._arrays(spec.case_id)[1][spec.slice_index]).astype(np.int64)

    def __len__(self):  # addressed by SliceSpec through a batch sampler, never by position
        raise TypeError("SliceDataset is indexed by SliceSpec")


def collate_slices(items):
    """Keep variable-sized slices as lists (they are resized to one size on the device)."""
    return [i for i, _ in items], [l for _, l in items]


class MappedCollate:
    """Collate that also maps the batch to input tensors (models/input_mapping.py): used by CPU
    training with worker processes, so that the resize runs there, beside the training step."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, items):
        images, labels = collate_slices(items)
        return self.mapper.stacked_images(images), self.mapper.labels(labels)
