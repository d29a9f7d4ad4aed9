"""How samunet writes files: atomically, under unique temporary names, and under a folder lock where
several commands may write the same folder.

Every file goes to a temporary name unique to this write in its target folder (ending as the final name
does, so writers that choose a format by the ending still work), is flushed to disk, checked (not empty,
and whatever the caller's check reads back) and renamed onto its final name: an interrupted, failed or
concurrent write never leaves a partial file under a final name, and two writers never share a temporary.
"""
import contextlib
import fcntl
import json
import os
import sys
import uuid
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


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, check=None):
    """Yield a temporary path to write `path` through. When the block ends without an error, the file
    is synced, must be non-empty and pass `check(temporary_path)` (which raises SamunetError otherwise),
    and is renamed onto `path`; on any error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{uuid.uuid4().hex[:12]}.tmp.{path.name}")
    try:
        yield tmp
        _fsync(tmp)
        if tmp.stat().st_size == 0:
            raise SamunetError(f"{path}: writing it produced an empty file (is the disk full?)")
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        if tmp.exists():
            tmp.unlink()


def is_temporary(path):
    """Files that atomic_write is (or was, when interrupted) writing."""
    return Path(path).name.startswith(".") and ".tmp." in Path(path).name


def remove_temporaries(folder):
    """Delete what killed writers left in `folder`: only while no other command writes there (under the
    folder's lock, or in a folder that one command owns)."""
    folder = Path(folder)
    for leftover in filter(is_temporary, folder.iterdir() if folder.is_dir() else ()):
        leftover.unlink(missing_ok=True)


def write_json(data, path):
    """Write `data` as indented JSON, atomically."""
    with atomic_write(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, default=_to_builtin)
            f.write("\n")


def copy_file(source, target):
    """Copy `source` to `target` atomically (the copy is compared by size with its source)."""
    source = Path(source)

    def same_size(tmp):
        if tmp.stat().st_size != source.stat().st_size:
            raise SamunetError(f"{target}: copy of {source} is incomplete")

    with atomic_write(target, same_size) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)


def read_json(path):
    path = Path(path)
    if not path.is_file():
        raise SamunetError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise SamunetError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise SamunetError(f"{path}: not a text (JSON) file") from None


@contextlib.contextmanager
def folder_lock(folder, purpose, wait=True):
    """Hold the folder's lock while writing it: an flock on `.{folder name}.lock` beside the folder (so
    taking it creates nothing inside; the system releases it when the process ends, also on kill -9). A
    second command that needs it says so in one line and waits, then finds the work done and skips it
    (wait=False: it stops with that line instead). Not re-entrant: take it once per process and folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another samunet command"
            if not wait:
                raise SamunetError(f"{folder}: {holder} is writing here; wait for it to end") from None
            print(f"{folder}: waiting for {holder} to finish writing here", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{purpose} (process {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
