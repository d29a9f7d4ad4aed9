"""Synthetic phantom datasets with known geometry: test fixtures and the built-in default dataset.

Each case is an ellipsoidal 'body' with up to two labelled ellipsoids inside, in a volume with a rotated
direction, a non-zero origin and (optionally) anisotropic spacing along a chosen axis. MR-like cases are
zero outside the body (so cropping matters) with a random per-case intensity scale; CT-like cases are in
Hounsfield units with air at -1000.
"""
import argparse

import numpy as np

from samunet.dataset_conversion.dataset_writer import staged_dataset, write_dataset_json
from samunet.errors import SamunetError, cli_entry
from samunet.imageio import Geometry, write_image
from samunet.paths import raw_root

LABELS = {"background": 0, "core": 1, "rim": 2}


def _ellipsoid(grid, center, radii):
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0


def _rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def phantom_case(rng, shape, spacing_xyz, kind="mr", num_channels=1, num_classes=2):
    """Returns (list of channel arrays (z, y, x), label array, Geometry)."""
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = _ellipsoid(grid, (0, 0, 0), (0.9, 0.7, 0.75))
    label = np.zeros(shape, np.uint8)
    centers = [(0.0, rng.uniform(-0.2, 0.2), rng.uniform(-0.25, -0.1)), (0.0, rng.uniform(-0.2, 0.2), 0.3)]
    for c in range(1, num_classes + 1):
        radii = (0.6, rng.uniform(0.18, 0.28), rng.uniform(0.15, 0.22))
        label[_ellipsoid(grid, centers[c - 1], radii) & body] = c
    images = []
    for ch in range(num_channels):
        if kind == "ct":
            contrast = {0: 40.0, 1: 250.0 - 60 * ch, 2: -90.0 + 30 * ch}
            img = np.full(shape, -1000.0)
            img[body] = contrast[0]
            for c in range(1, num_classes + 1):
                img[label == c] = contrast[c]
            img = np.round(img + rng.normal(0, 15, shape) * body).astype(np.int16)
        else:
            scale = rng.uniform(0.5, 20.0)
            contrast = {0: 100.0, 1: 170.0 - 40 * ch, 2: 50.0 + 60 * ch}
            img = np.zeros(shape)
            img[body] = contrast[0]
            for c in range(1, num_classes + 1):
                img[label == c] = contrast[c]
            img = ((img + rng.normal(0, 12, shape)) * body * scale).astype(np.float32)
        images.append(img)
    origin = tuple(float(v) for v in rng.uniform(-120, 120, 3))
    geometry = Geometry(tuple(float(s) for s in spacing_xyz), origin, _rotation_z(rng.uniform(0.1, 0.6)))
    return images, label, geometry


def generate_synthetic_dataset(
    raw_folder,
    dataset_id,
    name="Synthetic",
    num_cases=6,
    kind="mr",
    num_channels=1,
    anisotropic_axis=0,
    shape=(12, 40, 36),
    file_ending=".nii.gz",
    spacing_jitter=0.0,
    num_classes=2,
    seed=0,
):
    """Write a phantom dataset in nnU-Net v2 layout. `anisotropic_axis` (numpy z/y/x = 0/1/2, or None for
    isotropic 1 mm) gets 4 mm spacing; `spacing_jitter` varies in-plane spacing between cases (forces
    resampling). Returns the dataset folder."""
    rng = np.random.default_rng(seed)
    channel_names = {c: ("CT" if kind == "ct" else "MRI") if c == 0 else f"{kind.upper()}_{c}" for c in range(num_channels)}
    labels = {k: v for k, v in LABELS.items() if v <= num_classes}
    with staged_dataset(raw_folder, dataset_id, name) as folder:
        for i in range(num_cases):
            spacing_zyx = [1.0, 1.0, 1.0]
            if anisotropic_axis is not None:
                spacing_zyx = [0.8, 0.8, 0.8]
                spacing_zyx[anisotropic_axis] = 4.0
            jitter = rng.uniform(1 - spacing_jitter, 1 + spacing_jitter)
            spacing_zyx = [s if a == anisotropic_axis else s * jitter for a, s in enumerate(spacing_zyx)]
            case_shape = tuple(int(s + rng.integers(-2, 3)) for s in shape)
            images, label, geom = phantom_case(rng, case_shape, spacing_zyx[::-1], kind, num_channels, num_classes)
            case_id = f"{name.lower()}_{i:03d}"
            for c, img in enumerate(images):
                write_image(img, geom, folder / "imagesTr" / f"{case_id}_{c:04d}{file_ending}")
            write_image(label, geom, folder / "labelsTr" / f"{case_id}{file_ending}")
        write_dataset_json(folder, channel_names, labels, num_cases, file_ending, name=name,
                           description=f"synthetic {kind} phantoms made by samunet_generate_synthetic (seed {seed})")
    return raw_folder / f"Dataset{int(dataset_id):03d}_{name}"


@cli_entry
def main(argv=None):
    parser = argparse.ArgumentParser(description="Write a synthetic phantom dataset into SAMUNET_RAW.")
    parser.add_argument("-d", type=int, default=990, help="dataset id (default 990)")
    parser.add_argument("-n", "--num-cases", type=int, default=12)
    parser.add_argument("--name", default="Synthetic")
    parser.add_argument("--kind", choices=("mr", "ct"), default="mr")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--isotropic", action="store_true", help="1 mm isotropic instead of 4 mm slices")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_cases < 1 or args.channels < 1:
        raise SamunetError("--num-cases and --channels must be at least 1")
    existing = raw_root() / f"Dataset{args.d:03d}_{args.name}"
    if (existing / "dataset.json").is_file() and "samunet_generate_synthetic" in (existing / "dataset.json").read_text():
        print(f"{existing}: a synthetic dataset already exists; kept (use another -d for a new one)")
        return  # so that the README's demo command can simply be run again
    folder = generate_synthetic_dataset(
        raw_root(), args.d, args.name, args.num_cases, args.kind, args.channels,
        None if args.isotropic else 0, spacing_jitter=0.1, seed=args.seed,
    )
    print(f"wrote {folder}")
