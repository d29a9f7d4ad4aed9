"""Small file helpers: JSON that is written atomically, so a crash never leaves half a file."""
import json
import os
from pathlib import Path

import numpy as np

from samunet.errors import SamunetError


def _to_builtin(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(data, path):
    """Write `data` as indented JSON via a temporary file and a rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=_to_builtin)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise SamunetError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise SamunetError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
