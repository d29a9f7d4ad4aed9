"""Reading and writing 3D medical images with SimpleITK, keeping their physical geometry.

Arrays are in numpy order (z, y, x), as SimpleITK returns them. `Geometry` keeps SimpleITK's own order
(x, y, z) for spacing and origin and the row-major 3x3 direction, so writing it back is exact.
"""
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samunet.errors import SamunetError

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
    return sitk.GetArrayFromImage(img), _geometry_of(img)


def write_image(array, geometry, path):
    """Write a (z, y, x) array with the given geometry; the file ending chooses the format."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing([float(v) for v in geometry.spacing])
    img.SetOrigin([float(v) for v in geometry.origin])
    img.SetDirection([float(v) for v in geometry.direction])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def _first_line(err):
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # SimpleITK errors start with a source location; the last line says what went wrong.
    return lines[-1] if lines else type(err).__name__
