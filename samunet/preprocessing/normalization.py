"""Per-channel intensity normalisation, as the plan's `normalization` entries describe it."""
import numpy as np


def normalize_channel(image, scheme, nonzero_mask=None):
    """Normalise one channel (float32, any shape). Returns (normalised image, per-case stats used)."""
    image = image.astype(np.float32, copy=False)
    kind = scheme["scheme"]
    if kind == "ct":
        lo, hi = scheme["clip"]
        return (np.clip(image, lo, hi) - scheme["mean"]) / scheme["std"], {}
    if kind == "rgb_to_0_1":
        return image / 255.0, {}
    if kind == "none":
        return image, {}
    if kind != "zscore":
        raise ValueError(f"unknown normalisation scheme {kind!r}")
    if scheme.get("use_nonzero_mask") and nonzero_mask is not None and nonzero_mask.any():
        values = image[nonzero_mask]
        mean, std = float(values.mean()), max(float(values.std()), 1e-8)
        out = np.where(nonzero_mask, (image - mean) / std, 0.0).astype(np.float32)
    else:
        mean, std = float(image.mean()), max(float(image.std()), 1e-8)
        out = (image - mean) / std
    return out, {"mean": mean, "std": std}
