"""Checks that a raw case is usable: matching geometry across channels and label, finite intensities,
integer label values listed in dataset.json. Each problem is one line naming the case."""
import sys

import numpy as np
from tqdm import tqdm

from samunet.errors import SamunetError
from samunet.imageio import read_header, read_image


def geometry_problems(case_id, shapes_and_geometries, names):
    """Problems when channel and label files disagree in shape, spacing, origin or direction."""
    ref_shape, ref_geom = shapes_and_geometries[0]
    problems = []
    for (shape, geom), name in zip(shapes_and_geometries[1:], names[1:]):
        if tuple(shape) != tuple(ref_shape):
            problems.append(f"case {case_id}: {name} has shape {tuple(shape)} but {names[0]} has {tuple(ref_shape)}")
            continue
        for field in geom.matches(ref_geom):
            problems.append(
                f"case {case_id}: {name} {field} {getattr(geom, field)} differs from {names[0]} {getattr(ref_geom, field)}"
            )
    return problems


def value_problems(case_id, images, label, label_values, names):
    problems = []
    for img, name in zip(images, names):
        if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
            problems.append(f"case {case_id}: {name} contains NaN or infinite values")
    if label is None:
        return problems
    values = np.unique(label)
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all() or not np.all(values == np.round(values)):
            bad = values[~np.isfinite(values) | (values != np.round(values))][:3]
            return problems + [f"case {case_id}: label has non-integer values {bad.tolist()}"]
    unknown = sorted(set(values.astype(np.int64).tolist()) - set(label_values))
    if unknown:
        problems.append(
            f"case {case_id}: label has values {unknown} not listed in dataset.json labels {sorted(label_values)}"
        )
    return problems


def read_checked_case(case, label_values):
    """Read a raw case, raising SamunetError on the first problem. Returns (images, label, geometry)."""
    images, headers = [], []
    for path in case.images:
        arr, geom = read_image(path)
        images.append(arr)
        headers.append((arr.shape, geom))
    label, label_geom = read_image(case.label) if case.label is not None else (None, None)
    names = [p.name for p in case.images]
    if label is not None:
        headers.append((label.shape, label_geom))
        names.append(case.label.name)
    problems = geometry_problems(case.case_id, headers, names) or value_problems(
        case.case_id, images, label, label_values, names
    )
    if problems:
        raise SamunetError(problems[0])
    if label is not None:
        label = label.astype(np.int16 if max(label_values) > 127 else np.int8, copy=False)
    return images, label, headers[0][1]


def case_header_problems(case):
    """Cheap check (headers only) for one case."""
    try:
        paths = [*case.images, case.label]
        headers = [read_header(p) for p in paths]
    except SamunetError as err:
        return [f"case {case.case_id}: {err}"]
    return geometry_problems(case.case_id, headers, [p.name for p in paths])


def check_headers(raw):
    """The cheap checks run on every planning/preprocessing run: stop at the first problem."""
    for case in raw.cases.values():
        problems = case_header_problems(case)
        if problems:
            raise SamunetError(problems[0])


def _case_problems(args):
    case, label_values = args
    problems = case_header_problems(case)
    if problems:
        return problems
    try:
        read_checked_case(case, label_values)
    except SamunetError as err:
        msg = str(err)
        return [msg if msg.startswith("case ") else f"case {case.case_id}: {msg}"]
    return []


def verify_dataset_integrity(raw, num_processes=1):
    """Read every case and report every problem, one line each, before anything is written."""
    from samunet.parallel import map_with_progress

    label_values = list(raw.labels.values())
    jobs = [(case, label_values) for case in raw.cases.values()]
    problems = [
        p for result in map_with_progress(_case_problems, jobs, num_processes, desc="verifying") for p in result
    ]
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        raise SamunetError(f"{raw.folder}: dataset integrity check failed with {len(problems)} problem(s), listed above")
    tqdm.write(f"{raw.folder.name}: {len(raw.cases)} cases passed the integrity check")
