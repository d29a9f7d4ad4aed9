"""How synthetic cases are scored, and which of them training uses.

Each method scores its cases in 0..1 (see the method's module). The rule: cases under QUALITY_FLOOR times
the set's median score are dropped from training (a failed case scores 0), and the others are drawn with
probability proportional to their score.
"""
import numpy as np

QUALITY_FLOOR = 0.5
RULE = (f"cases under {QUALITY_FLOOR} x the median quality are dropped; the others are drawn with probability "
        "proportional to their quality")


def local_correlation(a, b, mask):
    """Pearson correlation of two images inside `mask`, 0 where it is undefined."""
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def sampling_weights(qualities):
    """{case: quality} -> ({case: probability} of the cases training draws from, the floor applied)."""
    floor = QUALITY_FLOOR * float(np.median(list(qualities.values()))) if qualities else 0.0
    kept = {c: q for c, q in qualities.items() if q >= floor and q > 0}
    total = sum(kept.values())
    return {c: q / total for c, q in kept.items()}, floor
