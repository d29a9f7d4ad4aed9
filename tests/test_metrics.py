import numpy as np
import pytest

from samunet.evaluation.metrics import binary_metrics, surface


def brute_force_hd95(a, b, spacing):
    """Pairwise distances between all surface voxels: an independent reference for the EDT version."""
    pa = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    pooled = np.concatenate([d.min(axis=1), d.min(axis=0)])
    return np.percentile(pooled, 95), pooled.max()


def cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(l, h) for l, h in zip(lo, hi))] = True
    return m


def test_single_voxels_at_known_distance_in_mm():
    a, b = cube((12, 12, 12), (5, 5, 5), (6, 6, 6)), cube((12, 12, 12), (8, 5, 5), (9, 6, 6))
    m = binary_metrics(a, b, spacing=(3.0, 1.0, 1.0))
    assert m["HD95"] == pytest.approx(9.0)  # 3 voxels along z at 3 mm
    assert m["Dice"] == 0 and m["NSD"] == 0
    assert binary_metrics(a, b, spacing=(1.0, 1.0, 1.0))["HD95"] == pytest.approx(3.0)  # --voxel-units


@pytest.mark.parametrize("offset", [(1, 0, 0), (0, 2, 0), (2, 1, 3)])
def test_shifted_cubes_with_anisotropic_spacing(offset):
    spacing = (2.5, 0.8, 1.2)
    a = cube((20, 24, 24), (5, 6, 6), (12, 16, 15))
    b = cube((20, 24, 24), tuple(5 + o for o in (0, 0, 0)), (12, 16, 15))
    b = np.roll(b, offset, axis=(0, 1, 2))
    m = binary_metrics(a, b, spacing)
    hd95, hd_max = brute_force_hd95(a, b, spacing)
    assert m["HD95"] == pytest.approx(hd95)
    assert m["HD95"] <= hd_max and hd_max >= np.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing)))
    inter = (a & b).sum()
    assert m["Dice"] == pytest.approx(2 * inter / (a.sum() + b.sum()))
    assert m["IoU"] == pytest.approx(inter / (a | b).sum())


def test_nsd_tolerance():
    spacing = (1.0, 1.0, 1.0)
    a = cube((20, 20, 20), (5, 5, 5), (15, 15, 15))
    b = np.roll(a, 1, axis=2)
    assert binary_metrics(a, b, spacing, nsd_tolerance=1.0)["NSD"] == 1.0  # every surface voxel within 1 mm
    strict = binary_metrics(a, b, spacing, nsd_tolerance=0.5)["NSD"]
    assert 0 < strict < 1
    assert binary_metrics(a, a, spacing, nsd_tolerance=0.0)["NSD"] == 1.0


def test_empty_conventions():
    empty = np.zeros((8, 8, 8), bool)
    full = cube((8, 8, 8), (2, 2, 2), (4, 4, 4))
    both = binary_metrics(empty, empty, (1, 1, 1))
    assert all(np.isnan(both[k]) for k in ("Dice", "IoU", "HD95", "NSD"))
    missed = binary_metrics(empty, full, (2.0, 1.0, 1.0))
    assert missed["Dice"] == 0 and missed["NSD"] == 0
    assert missed["HD95"] == pytest.approx(np.sqrt(16**2 + 8**2 + 8**2))  # the volume's diagonal in mm
    false_positive = binary_metrics(full, empty, (2.0, 1.0, 1.0))  # defined, so that it counts in the means
    assert false_positive["Dice"] == 0 and false_positive["NSD"] == 0
    assert false_positive["HD95"] == pytest.approx(np.sqrt(16**2 + 8**2 + 8**2))
