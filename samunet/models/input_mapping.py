"""From normalised slices to what a backbone eats, on the device.

A slice's encoder input is built from its *planes*: per channel (channel-major), the slices
z - n .. z + n along the slicing axis, n = the plan's `encoder_input.context_slices` (0: the slice alone;
volume edges replicated). Per plane the plan's window of its channel [lo, hi] maps to [0, 1]; the plan's
`encoder_input.projection` (3 rows, one weight per plane, each row summing to 1) then mixes the planes
into SAM's 3 input channels; then a bilinear resize to the input size and scaling to the backbone's input
range. With `encoder_input.channel_encoding` "separate" there is no projection: each channel's windowed
plane fills all 3 input channels of an image of its own (a grey image, as SAM was trained on), and the
head fuses the C embeddings (models/slice_fusion.py). A model that fuses neighbouring slices' embeddings
in the head (the plan's `encoder_input.fused_slices` f) takes per slice the *stack* of slices
z - f .. z + f, each mapped alone. Labels use centre-aligned nearest ("nearest-exact"), which prediction
inverts exactly (inference/predictor.py).

`default_projection` is the planner's rule (README "Channels and 3D context"):
- no context: 1 channel -> repeated; 2 -> (c0, c1, mean); 3 -> as they are; C > 3 -> the channels split
  in order into 3 contiguous groups (sizes as even as possible, larger groups first), each input channel the
  mean of its group;
- with context: (mean of the planes below z, slice z, mean of the planes above z), each the mean over
  channels: for one channel and n = 1 exactly (z-1, z, z+1).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from samunet.models.slice_fusion import neighbour_indices


def default_projection(num_channels, context_slices):
    """The 3 x (num_channels * (2n + 1)) projection of the rule above (plain lists, as the plan stores it)."""
    depth = 2 * context_slices + 1
    weights = np.zeros((3, num_channels, depth))
    if context_slices:
        for row, offsets in enumerate((range(context_slices), [context_slices], range(context_slices + 1, depth))):
            for j in offsets:
                weights[row, :, j] = 1.0
    elif num_channels == 1:
        weights[:, 0, 0] = 1.0
    elif num_channels == 2:
        weights[0, 0, 0] = weights[1, 1, 0] = weights[2, :, 0] = 1.0
    else:
        for row, group in enumerate(np.array_split(np.arange(num_channels), 3)):
            weights[row, group, 0] = 1.0
    weights = weights.reshape(3, -1)
    return (weights / weights.sum(axis=1, keepdims=True)).round(6).tolist()


PROJECTED, SEPARATE = "projected", "separate"  # the plan's encoder_input.channel_encoding


@dataclass(frozen=True)
class EncoderInput:
    """How a slice becomes encoder input: the neighbours it is given and the plane-to-channel projection,
    or each channel encoded alone (`channel_encoding` SEPARATE: no projection, no context slices)."""
    context_slices: int
    projection: tuple  # 3 rows of num_channels * (2 * context_slices + 1) weights; None when SEPARATE
    channel_encoding: str = PROJECTED

    @classmethod
    def default(cls, num_channels, context_slices=0, channel_encoding=PROJECTED):
        if channel_encoding == SEPARATE:
            return cls(0, None, SEPARATE)
        return cls(context_slices, tuple(map(tuple, default_projection(num_channels, context_slices))))

    def fields(self):
        return {"context_slices": self.context_slices,
                "projection": [list(r) for r in self.projection] if self.projection else None,
                "channel_encoding": self.channel_encoding}

    def cache_fields(self):
        """What a slice's cached embedding depends on (projected: the keys of caches from before
        `channel_encoding`, so that they stay valid)."""
        fields = self.fields()
        if self.channel_encoding == PROJECTED:
            del fields["channel_encoding"]
        return fields

    def views(self, num_channels):
        """Encoder images per slice: one (the projection), or one per channel."""
        return num_channels if self.channel_encoding == SEPARATE else 1

    def planes(self, volume, index):
        """(C, S, H, W) volume (numpy or blosc2) -> (C * (2n + 1), H, W) float32 planes of slice `index`."""
        n = self.context_slices
        if not n:
            return np.asarray(volume[:, index], dtype=np.float32)
        count = volume.shape[1]
        first, stop = max(0, index - n), min(count, index + n + 1)
        block = np.asarray(volume[:, first:stop], dtype=np.float32)  # one contiguous read
        rows = np.clip(np.arange(index - n, index + n + 1), 0, count - 1) - first
        return block[:, rows].reshape(-1, *block.shape[2:])

    def stack(self, volume, index, fused_slices):
        """The planes of slices index - f .. index + f (edges replicated), concatenated:
        (planes * (2f + 1), H, W)."""
        if not fused_slices:
            return self.planes(volume, index)
        slices = neighbour_indices(index, fused_slices, volume.shape[1])
        return np.concatenate([self.planes(volume, j) for j in slices])


class InputMapper:
    def __init__(self, windows, encoder_input, input_range, input_size, device, fused_slices=0):
        """`windows`: per channel [lo, hi]; `encoder_input`: an EncoderInput; `fused_slices`: the model's."""
        self.encoder_input = encoder_input
        self.fused_slices = fused_slices
        self.views = encoder_input.views(len(windows))
        depth = 2 * encoder_input.context_slices + 1
        w = torch.tensor(windows, dtype=torch.float32, device=device).repeat_interleave(depth, dim=0)
        self.lo, self.width = w[:, 0].view(-1, 1, 1), (w[:, 1] - w[:, 0]).clamp_min(1e-6).view(-1, 1, 1)
        self.projection = (torch.tensor(encoder_input.projection, dtype=torch.float32, device=device)
                           if encoder_input.projection else None)
        self.range_lo, self.range_width = float(input_range[0]), float(input_range[1] - input_range[0])
        self.size = input_size
        self.device = device

    def planes(self, volume, index):
        return self.encoder_input.planes(volume, index)

    def stack(self, volume, index):
        return self.encoder_input.stack(volume, index, self.fused_slices)

    def stacked_images(self, stacks):
        """list of stacks (`stack`) -> (B, (2f + 1) * views, 3, S, S), slice-major; as `images` when f is 0."""
        depth = 2 * self.fused_slices + 1
        if depth == 1:
            return self.images(stacks)
        images = self.images([plane for s in stacks for plane in np.split(s, depth)])
        images = images.unflatten(0, (len(stacks), depth))
        return images.flatten(1, 2) if self.views > 1 else images

    def _project(self, x):
        """(B, planes, h, w) -> (B, 3, h, w)."""
        return torch.einsum("kp,bphw->bkhw", self.projection, x)

    def images(self, slices):
        """list of (planes, h, w) numpy arrays -> (B, 3, S, S) float tensor in the backbone's input range;
        (B, C, 3, S, S) when the C channels are encoded separately (each windowed plane in all 3)."""
        views = (self.views,) if self.views > 1 else ()
        out = torch.empty(len(slices), *views, 3, self.size, self.size, device=self.device)
        for indices, batch in _same_shape_groups(slices):
            # Window, projection and range scaling are affine and commute with the bilinear resize: done on
            # the side with fewer channels (one plane resized, then repeated, is cheaper than three).
            x = torch.as_tensor(batch, device=self.device, dtype=torch.float32)
            x = ((x - self.lo) / self.width).clamp(0, 1)
            if views:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
                out[indices] = x[:, :, None].expand(-1, -1, 3, -1, -1) * self.range_width + self.range_lo
                continue
            if x.shape[1] >= 3:
                x = self._project(x)
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            if x.shape[1] < 3:
                x = self._project(x)
            out[indices] = x * self.range_width + self.range_lo
        return out

    def labels(self, labels):
        """list of (h, w) integer arrays -> (B, S, S) long tensor."""
        out = torch.empty(len(labels), self.size, self.size, dtype=torch.long, device=self.device)
        for indices, batch in _same_shape_groups(labels):
            x = torch.as_tensor(batch, device=self.device)[:, None].float()
            out[indices] = F.interpolate(x, size=(self.size, self.size), mode="nearest-exact")[:, 0].long()
        return out


def _same_shape_groups(arrays):
    """(indices, stacked arrays) per distinct shape: slices of one case share a shape, so a batch resizes
    in a call or two instead of one per slice (1.6 ms less per batch of 8 hippocampus slices at 256)."""
    groups = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    return [(idx, np.stack([arrays[i] for i in idx])) for idx in groups.values()]
