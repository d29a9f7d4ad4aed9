"""The prompts file: boxes and points per case and class, in the original image's coordinates.

    {"format": "samunet-prompts-1",
     "coordinates": "voxel",            # or "world": millimetres in the image's physical space
     "provenance": "user",              # user | model | ground_truth: kept apart in every summary
     "cases": {"hippocampus_001": {     # case id: the image {case}_0000{ending}
        "anterior": {                   # class name or label value
           "boxes": [[x0, y0, z0, x1, y1, z1]],               # 3D boxes, both corners inclusive
           "slice_boxes": [{"slice": 12, "box": [x0, y0, x1, y1]}],  # 2D boxes on slice z = 12
           "points": [[x, y, z, 1], [x, y, z, 0]]}}}}          # 1: inside the structure, 0: outside

Voxel coordinates are indices into the image as viewers show them (x, y, z = the file's first, second,
third axis). World coordinates are converted with the image's origin, spacing and direction to the
nearest voxel; a world box becomes the voxel box around its 8 corners. 2D boxes are voxel boxes one slice
thick (voxel coordinates only). Everything must lie inside the image.
"""
import itertools
import json
from dataclasses import dataclass, field

import numpy as np

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.prompts.mapping import world_to_voxel

FORMAT = "samunet-prompts-1"
PROVENANCES = ("user", "model", "ground_truth")
FIELDS = ("boxes", "slice_boxes", "points")


@dataclass
class ClassPrompts:
    boxes: list = field(default_factory=list)  # [(x0, y0, z0, x1, y1, z1)] inclusive voxel indices
    points: list = field(default_factory=list)  # [(x, y, z, 1 or 0)] voxel indices


def _numbers(value, count, where):
    if (not isinstance(value, (list, tuple)) or len(value) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)):
        raise SamunetError(f"{where}: expected a list of {count} numbers, got {json.dumps(value)}")
    return [float(v) for v in value]


class PromptFile:
    def __init__(self, content, labels, path):
        """content: a prompts file's JSON content, read from `path` (named in errors); labels: the plan's
        {class name: value}. Checks the structure; coordinates are checked against each image by
        `voxel_prompts`."""
        self.path = path
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise SamunetError(f"{path}: not a samunet prompts file (\"format\": \"{FORMAT}\" expected)")
        self.coordinates = content.get("coordinates", "voxel")
        if self.coordinates not in ("voxel", "world"):
            raise SamunetError(f"{path}: coordinates '{self.coordinates}': voxel or world")
        self.provenance = content.get("provenance", "user")
        if self.provenance not in PROVENANCES:
            raise SamunetError(f"{path}: provenance '{self.provenance}': one of {', '.join(PROVENANCES)}")
        cases = content.get("cases")
        if not isinstance(cases, dict) or not cases:
            raise SamunetError(f"{path}: no \"cases\"")
        by_value = {str(v): v for v in labels.values() if v}
        by_name = {n: v for n, v in labels.items() if v}
        self.cases = {}
        for case_id, classes in cases.items():
            if not isinstance(classes, dict):
                raise SamunetError(f"{path}: case {case_id}: expected classes with their prompts")
            self.cases[case_id] = {}
            for key, entry in classes.items():
                value = by_name.get(key, by_value.get(str(key)))
                if value is None:
                    raise SamunetError(f"{path}: case {case_id}: unknown class '{key}' (the model's classes: "
                                       f"{', '.join(f'{n} ({v})' for n, v in by_name.items())})")
                unknown = set(entry) - set(FIELDS) if isinstance(entry, dict) else {"(not an object)"}
                if unknown:
                    raise SamunetError(f"{path}: case {case_id}, class {key}: unknown field(s) {', '.join(sorted(unknown))}"
                                       f" (expected {', '.join(FIELDS)})")
                self.cases[case_id][value] = self._parse_class(entry, f"{path}: case {case_id}, class {key}")

    @classmethod
    def read(cls, path, labels):
        return cls(read_json(path), labels, path)

    def _parse_class(self, entry, where):
        boxes = [_numbers(b, 6, f"{where}, box") for b in entry.get("boxes", [])]
        points = [_numbers(p, 4, f"{where}, point") for p in entry.get("points", [])]
        for p in points:
            if p[3] not in (0, 1):
                raise SamunetError(f"{where}: a point's fourth number is 1 (inside) or 0 (outside), got {p[3]:g}")
        for item in entry.get("slice_boxes", []):
            if self.coordinates != "voxel":
                raise SamunetError(f"{where}: slice_boxes are given in voxel coordinates only")
            if not isinstance(item, dict) or set(item) != {"slice", "box"}:
                raise SamunetError(f"{where}: a slice box is {{\"slice\": z, \"box\": [x0, y0, x1, y1]}}")
            (z,), (x0, y0, x1, y1) = _numbers([item["slice"]], 1, f"{where}, slice"), _numbers(item["box"], 4, f"{where}, box")
            boxes.append([x0, y0, z, x1, y1, z])
        return boxes, points

    def voxel_prompts(self, case_id, shape_zyx, geometry):
        """{label value: ClassPrompts} of a case in voxel indices of its image; one-line errors for
        boxes that are inverted or leave the image, and points outside it."""
        size = np.array(shape_zyx[::-1])  # (x, y, z)
        out = {}
        for value, (boxes, points) in self.cases.get(case_id, {}).items():
            where = f"{self.path}: case {case_id}, class {value}"
            prompts = ClassPrompts()
            for box in boxes:
                lo, hi = self._box_to_voxels(box, geometry)
                if np.any(lo > hi):
                    raise SamunetError(f"{where}: box {box} has a corner below the other; give [x0, y0, z0, x1, y1, z1] "
                                       "with x0 <= x1, y0 <= y1, z0 <= z1")
                if np.any(lo < 0) or np.any(hi >= size):
                    raise SamunetError(f"{where}: box {box} leaves the image (voxels 0..{size[0] - 1}, "
                                       f"0..{size[1] - 1}, 0..{size[2] - 1})")
                prompts.boxes.append((*lo.tolist(), *hi.tolist()))
            for point in points:
                xyz = self._to_voxel(point[:3], geometry)
                if np.any(xyz < 0) or np.any(xyz >= size):
                    raise SamunetError(f"{where}: point {point[:3]} lies outside the image")
                prompts.points.append((*xyz.tolist(), int(point[3])))
            out[value] = prompts
        return out

    def _to_voxel(self, xyz, geometry):
        if self.coordinates == "world":
            xyz = world_to_voxel(xyz, geometry)
        return np.rint(np.asarray(xyz, dtype=float)).astype(int)

    def _box_to_voxels(self, box, geometry):
        if self.coordinates == "voxel":
            return np.rint(box[:3]).astype(int), np.rint(box[3:]).astype(int)
        corners = np.array([self._to_voxel(c, geometry) for c in itertools.product(*zip(box[:3], box[3:]))])
        return corners.min(0), corners.max(0)


def prompt_file_content(cases, provenance, coordinates="voxel"):
    """The JSON content of a prompts file for {case: {class key: {"boxes": ..., ...}}}."""
    if provenance not in PROVENANCES:
        raise SamunetError(f"provenance '{provenance}': one of {', '.join(PROVENANCES)}")
    return {"format": FORMAT, "coordinates": coordinates, "provenance": provenance, "cases": cases}
