"""From normalised slices to what a backbone eats, on the device.

Per channel the plan's window [lo, hi] maps to [0, 1]; then channels become SAM's 3 input channels:
1 channel -> repeated, 2 channels -> (c0, c1, mean), 3 -> as they are (more is refused at start-up);
then a bilinear resize to the input size and scaling to the backbone's input range. Labels use centre-aligned nearest
("nearest-exact"), which prediction inverts exactly (inference/predictor.py).
"""
import torch
import torch.nn.functional as F

from samunet.errors import SamunetError


def check_channels(num_channels):
    if num_channels > 3:
        raise SamunetError(f"{num_channels} input channels: SAM takes at most 3 (select channels in dataset.json)")


class InputMapper:
    def __init__(self, windows, input_range, input_size, device):
        w = torch.tensor(windows, dtype=torch.float32, device=device)
        check_channels(len(windows))
        self.lo, self.width = w[:, 0].view(-1, 1, 1), (w[:, 1] - w[:, 0]).clamp_min(1e-6).view(-1, 1, 1)
        self.range_lo, self.range_width = float(input_range[0]), float(input_range[1] - input_range[0])
        self.size = input_size
        self.device = device

    def _to_rgb(self, x):
        if x.shape[0] == 1:
            return x.expand(3, -1, -1)
        if x.shape[0] == 2:
            return torch.cat([x, x.mean(0, keepdim=True)])
        return x

    def images(self, slices):
        """list of (C, h, w) numpy arrays -> (B, 3, S, S) float tensor in the backbone's input range."""
        out = []
        for s in slices:
            # Window and range scaling are affine, so they commute with the bilinear resize (as does the
            # channel mean): done on the small slice and before the channels are repeated, it is cheaper.
            x = torch.as_tensor(s, device=self.device, dtype=torch.float32)
            x = ((x - self.lo) / self.width).clamp(0, 1) * self.range_width + self.range_lo
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
            out.append(self._to_rgb(x))
        return torch.stack(out)

    def labels(self, labels):
        """list of (h, w) integer arrays -> (B, S, S) long tensor."""
        out = [
            F.interpolate(torch.as_tensor(l, device=self.device)[None, None].float(), size=(self.size, self.size),
                          mode="nearest-exact")[0, 0]
            for l in labels
        ]
        return torch.stack(out).long()
