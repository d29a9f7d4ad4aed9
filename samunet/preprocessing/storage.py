"""On-disk format of one preprocessed case, in the dataset's `samunet_2d/` folder:

- `{case}.b2nd`      float32 (C, S, H, W), blosc2-compressed, one chunk per slice: a data loader reads one
                     slice without decompressing the volume.
- `{case}_seg.b2nd`  int8/int16 (S, H, W) label map, same chunking.
- `{case}.json`      properties: geometry, crop box, transpose, shapes, per-class slice indices, and the
                     stamp of the inputs and plan it was made from. Written last: a case without it is
                     incomplete and gets redone.
"""
import os
from pathlib import Path

import blosc2
import numpy as np

from samunet.file_io import read_json, write_json

_CPARAMS = {"codec": blosc2.Codec.ZSTD, "clevel": 3, "nthreads": 1}


def case_files(folder, case_id):
    folder = Path(folder)
    return folder / f"{case_id}.b2nd", folder / f"{case_id}_seg.b2nd", folder / f"{case_id}.json"


def _write_b2nd(array, path):
    # Chunk and block per slice (axis -3) so that reading one slice decompresses only that slice.
    per_slice = (*array.shape[:-3], 1, *array.shape[-2:])
    tmp = path.with_name("." + path.name)
    blosc2.asarray(
        np.ascontiguousarray(array), urlpath=str(tmp), mode="w", chunks=per_slice, blocks=per_slice, cparams=_CPARAMS
    )
    os.replace(tmp, path)


def save_case(folder, case_id, data, seg, properties):
    data_path, seg_path, props_path = case_files(folder, case_id)
    props_path.unlink(missing_ok=True)  # mark incomplete until everything is on disk
    _write_b2nd(data, data_path)
    if seg is not None:
        _write_b2nd(seg, seg_path)
    write_json(properties, props_path)


def load_properties(folder, case_id):
    return read_json(case_files(folder, case_id)[2])


def open_case(folder, case_id):
    """Lazy arrays (slice them to read) and the properties dict. seg is None for unlabelled cases."""
    data_path, seg_path, _ = case_files(folder, case_id)
    data = blosc2.open(str(data_path), mode="r")
    seg = blosc2.open(str(seg_path), mode="r") if seg_path.is_file() else None
    return data, seg, load_properties(folder, case_id)


def load_case(folder, case_id):
    """Whole case as numpy arrays."""
    data, seg, props = open_case(folder, case_id)
    return data[...], (seg[...] if seg is not None else None), props


def is_case_current(folder, case_id, stamp):
    data_path, _, props_path = case_files(folder, case_id)
    if not (props_path.is_file() and data_path.is_file()):
        return False
    try:
        return read_json(props_path).get("stamp") == stamp
    except Exception:
        return False
