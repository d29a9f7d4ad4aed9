"""Which in-plane axes a model saw mirrored in training: augmentation mirrors along MIRROR_AXES, each
checkpoint's metadata records the axes its training used (MIRRORING_RECORD), and prediction mirrors
(test-time augmentation) only along recorded axes (inference/mirroring.py)."""
import itertools

MIRROR_AXES = (0, 1)  # of a (H, W) slice
MIRRORING_RECORD = "mirroring_axes"  # the checkpoint metadata key


def mirror_combinations(axes):
    """Every combination of flips along `axes` (slice axes), the identity first: ((), (0,), (1,), (0, 1))."""
    axes = tuple(sorted(axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
