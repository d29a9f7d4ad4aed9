"""On-disk format of one preprocessed case, in the dataset's `samunet_2d/` folder:

- `{case}.b2nd`      float32 (C, S, H, W), blosc2-compressed, one chunk per slice: a data loader reads one
                     slice without decompressing the volume.
- `{case}_seg.b2nd`  int8/int16 (S, H, W) label map, same chunking.
- `{case}.json`      properties: geometry, crop box, transpose, shapes, per-class slice indices, and the
                     stamp of the inputs and plan it was made from. Written last: a case without it is
                     incomplete and gets redone.

Each file is written atomically (file_io.atomic_write) and read back before it takes its final name. A
case is up to date only when its stamp matches and every one of its files opens with the recorded shape.
"""
from pathlib import Path

import blosc2
import numpy as np

from samunet.errors import SamunetError
from samunet.file_io import atomic_write, read_json, write_json

_CPARAMS = {"codec": blosc2.Codec.ZSTD, "clevel": 3, "nthreads": 1}


def case_files(folder, case_id):
    folder = Path(folder)
    return folder / f"{case_id}.b2nd", folder / f"{case_id}_seg.b2nd", folder / f"{case_id}.json"


def _open_b2nd(path):
    try:
        return blosc2.open(str(path), mode="r")
    except Exception as err:  # blosc2 raises several types for damaged files
        raise SamunetError(f"{path}: cannot be read ({type(err).__name__}); run samunet_preprocess again") from None


def _write_b2nd(array, path):
    # Chunk and block per slice (axis -3) so that reading one slice decompresses only that slice.
    per_slice = (*array.shape[:-3], 1, *array.shape[-2:])

    def check(tmp):
        written = _open_b2nd(tmp)
        if tuple(written.shape) != tuple(array.shape) or not np.array_equal(written[-1], array[-1]):
            raise SamunetError(f"{path}: written incompletely")

    with atomic_write(path, check) as tmp:
        try:
            blosc2.asarray(np.ascontiguousarray(array), urlpath=str(tmp), mode="w", chunks=per_slice,
                           blocks=per_slice, cparams=_CPARAMS)
        except OSError:
            raise
        except Exception as err:  # blosc2 reports failed writes (a full disk) in several types
            raise SamunetError(f"{path}: cannot be written ({type(err).__name__}: {err})") from None


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
    data = _open_b2nd(data_path)
    seg = _open_b2nd(seg_path) if seg_path.is_file() else None
    return data, seg, load_properties(folder, case_id)


def load_case(folder, case_id):
    """Whole case as numpy arrays."""
    data, seg, props = open_case(folder, case_id)
    return data[...], (seg[...] if seg is not None else None), props


def is_case_current(folder, case_id, stamp, labelled=True):
    """The case was made from these inputs (stamp) and every file of it opens with the recorded shape."""
    data_path, seg_path, props_path = case_files(folder, case_id)
    try:
        props = read_json(props_path)
        if props.get("stamp") != stamp:
            return False
        shape = tuple(props["shape_after_resampling"])
        if tuple(_open_b2nd(data_path).shape[1:]) != shape:
            return False
        return not labelled or tuple(_open_b2nd(seg_path).shape) == shape
    except (SamunetError, KeyError, TypeError, OSError):
        return False
