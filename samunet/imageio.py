"""Reading and writing 3D medical images with SimpleITK, keeping their physical geometry.

Arrays are in numpy order (z, y, x), as SimpleITK returns them. `Geometry` keeps SimpleITK's own order
(x, y, z) for spacing and origin and the row-major 3x3 direction, so writing it back is exact.

SimpleITK reads a truncated .nii.gz without an error (the missing voxels become 0) and NaN / inf in NIfTI
files as 0, so NIfTI files get two checks of their own on every read: the gzip trailer's length against
the length the header implies (cheap), and, for floating-point voxels, a read of the stored values with
nibabel (which also fails on a truncated stream).
"""
import gzip
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from samunet.errors import SamunetError
from samunet.file_io import atomic_write

SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Geometry:
    spacing: tuple  # (x, y, z) in mm, SimpleITK order
    origin: tuple  # (x, y, z) in mm
    direction: tuple  # 9 numbers, row-major 3x3

    @property
    def spacing_zyx(self):
        return tuple(reversed(self.spacing))

    def to_dict(self):
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d):
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))

    def matches(self, other, atol=1e-4, rtol=1e-5):
        """Which of spacing/origin/direction differ from `other` (empty list when they agree)."""
        return [
            name
            for name in ("spacing", "origin", "direction")
            if not np.allclose(getattr(self, name), getattr(other, name), atol=atol, rtol=rtol)
        ]


def _check_3d(path, dimension, components):
    if components != 1:
        raise SamunetError(
            f"{path}: has {components} components per voxel; samunet expects one file per channel "
            "(`_0000`, `_0001`, ...)"
        )
    if dimension != 3:
        raise SamunetError(
            f"{path}: is a {dimension}D image; samunet expects 3D volumes "
            "(2D images: convert them with samunet_convert_2d)"
        )


def _geometry_of(img):
    return Geometry(tuple(img.GetSpacing()), tuple(img.GetOrigin()), tuple(img.GetDirection()))


def read_header(path):
    """Shape (z, y, x) and geometry from the header alone (cheap: no voxel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise SamunetError(f"{path}: cannot be read as an image ({_first_line(err)})") from None
    _check_3d(path, reader.GetDimension(), reader.GetNumberOfComponents())
    geometry = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection()))
    return tuple(reversed(reader.GetSize())), geometry


def read_image(path):
    """Voxel array (z, y, x) in its stored dtype, and its geometry."""
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise SamunetError(f"{path}: cannot be read as an image ({_first_line(err)})") from None
    _check_3d(path, img.GetDimension(), img.GetNumberOfComponentsPerPixel())
    check_nifti(path, values=True)
    return sitk.GetArrayFromImage(img), _geometry_of(img)


def _gzip_stream_complete(path):
    """Decompress to the end: True when every gzip member ends properly (slow path, rarely needed)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
        return True
    except (EOFError, OSError, zlib.error):
        return False


def check_nifti(path, values=False):
    """Raise SamunetError when a NIfTI file is shorter than its header says (truncated or damaged), or,
    with `values`, when its floating-point voxels hold NaN or infinity. Other formats pass unchecked."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        img = nib.load(str(path))
    except Exception as err:
        raise SamunetError(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    header = img.header
    expected = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, 2)
            stored = struct.unpack("<I", f.read(4))[0]  # gzip trailer: uncompressed length mod 2**32
        if stored != expected % 2**32 and not _gzip_stream_complete(path):
            raise SamunetError(f"{path}: truncated or damaged (the compressed stream ends early)")
    elif path.stat().st_size < expected:
        raise SamunetError(f"{path}: truncated ({path.stat().st_size} bytes, the header implies {expected})")
    if values and np.issubdtype(header.get_data_dtype(), np.floating):
        try:
            data = np.asanyarray(img.dataobj)
        except (EOFError, OSError, zlib.error, ValueError) as err:
            raise SamunetError(f"{path}: truncated or damaged ({type(err).__name__})") from None
        if not np.isfinite(data).all():
            raise SamunetError(f"{path}: contains NaN or infinite values")


def _check_written(path):
    try:
        check_nifti(path)
    except SamunetError as err:
        raise SamunetError(f"written file is damaged: {err}") from None


def from_sitk(img, name="image"):
    """A 3D SimpleITK image in memory -> (array (z, y, x), geometry); `name` says which in errors."""
    _check_3d(name, img.GetDimension(), img.GetNumberOfComponentsPerPixel())
    return sitk.GetArrayFromImage(img), _geometry_of(img)


def to_sitk(array, geometry):
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing([float(v) for v in geometry.spacing])
    img.SetOrigin([float(v) for v in geometry.origin])
    img.SetDirection([float(v) for v in geometry.direction])
    return img


def write_image(array, geometry, path):
    """Write a (z, y, x) array with the given geometry, atomically; the file ending chooses the format."""
    img = to_sitk(array, geometry)
    with atomic_write(path, _check_written) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        except RuntimeError as err:
            raise SamunetError(f"{path}: cannot be written ({_first_line(err)})") from None


def _first_line(err):
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # SimpleITK errors start with a source location; the last line says what went wrong.
    return lines[-1] if lines else type(err).__name__
