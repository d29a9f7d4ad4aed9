"""Preprocessing: raw volumes -> transposed, cropped, normalised, in-plane resampled slices (and back)."""
