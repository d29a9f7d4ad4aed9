"""Mirroring test-time augmentation, only along the axes a model was trained to see mirrored.

Each checkpoint's metadata records `mirroring_axes`: the in-plane axes of a slice (0: rows, 1: columns)
that its training mirrored, [] when it never did (training on cached embeddings of slices as preprocessed,
or --no-augmentation). Averaging in flipped passes along any other axis would add predictions of images
the model never learned, so prediction mirrors along the recorded axes only, like nnU-Net's
`inference_allowed_mirroring_axes`; an ensemble mirrors along the axes every member allows. A checkpoint
without the record (written before samunet recorded it) allows none.
"""
import sys

from samunet.models.mirroring_record import MIRRORING_RECORD as RECORD
from samunet.models.mirroring_record import mirror_combinations


def allowed_mirroring_axes(metadatas):
    """Sorted slice axes every model allows (the intersection of their records)."""
    allowed = None
    for metadata in metadatas:
        recorded = set(metadata.get(RECORD) or ())
        allowed = recorded if allowed is None else allowed & recorded
    return sorted(allowed or ())


def tensor_flips(axes):
    """Dims of (B, C, H, W) tensors to flip, one tuple per pass, the identity first."""
    return [tuple(a - 2 for a in combination) for combination in mirror_combinations(axes)]


def warn_if_unrecorded(metadata, source):
    if RECORD not in metadata:
        print(f"{source}: records no training augmentation (an older checkpoint): predicted without mirroring",
              file=sys.stderr)
