"""Channel files of 2D images (a case: one image, or slices stacked into a volume), written in one reading pass
with one channel count for the whole dataset.

A grey image (a 2D array, or RGB with equal channels, as SAM-Med2D and finetune-SAM save grey slices) is one
channel while every case so far was grey. The first colour case makes the dataset RGB: from then on every case
has three channels, grey ones repeated, and the grey cases written before it get channels 1 and 2 as copies of
their channel 0 (which is what they would have held), so no image is read twice.
"""
import shutil

import numpy as np

from samunet.dataset_conversion.image_files import is_grey
from samunet.imageio import write_image

RGB = 3


class ChannelWriter:
    def __init__(self):
        self.colour = False
        self._grey_cases = []  # (folder, case) of each case written while the dataset was grey

    @property
    def num_channels(self):
        return RGB if self.colour else 1

    def write(self, planes, geometry, folder, case):
        """Write case `case` into `folder` ({case}_{c:04d}.nii.gz): `planes`, its 2D images in slice order,
        (H, W) or (H, W, 3), all of one size."""
        grey = all(is_grey(p) for p in planes)
        if not grey and not self.colour:
            self.colour = True
            for earlier in self._grey_cases:
                self._repeat(*earlier)
            self._grey_cases = []
        for c in range(1 if grey else RGB):
            volume = np.stack([p if p.ndim == 2 else p[..., c] for p in planes])
            write_image(volume, geometry, channel_file(folder, case, c))
        if grey and self.colour:
            self._repeat(folder, case)
        elif grey:
            self._grey_cases.append((folder, case))

    @staticmethod
    def _repeat(folder, case):
        for c in range(1, RGB):
            shutil.copyfile(channel_file(folder, case, 0), channel_file(folder, case, c))


def channel_file(folder, case, channel):
    return folder / f"{case}_{channel:04d}.nii.gz"
