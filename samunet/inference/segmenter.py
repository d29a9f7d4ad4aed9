"""Interactive prompted segmentation from Python: a trained prompted model, one volume, boxes and clicks.

    from samunet.inference import Segmenter
    seg = Segmenter.from_model_folder("$SAMUNET_RESULTS/Dataset501_Hippocampus/decoder__litemedsam__prompts-box-point")
    labels = seg.segment("hippocampus_001_0000.nii.gz", boxes={"Anterior": [[10, 12, 8, 25, 30, 20]]})
    # the result leaks into slice z = 14: a negative click there (x, y, z, 0), the box kept
    labels = seg.segment("hippocampus_001_0000.nii.gz", boxes={"Anterior": [[10, 12, 8, 25, 30, 20]]},
                         points={"Anterior": [[22, 27, 14, 0]]})

Coordinates are the image's voxel indices (x, y, z), as in a prompts file (prompts/prompt_file.py); a 2D
box on slice z is the 3D box [x0, y0, z, x1, y1, z]. Classes are named or given by label value. The
result is a SimpleITK label image in the input's geometry. The volume is preprocessed once and each
slice's encoder output computed once (inference/prompted_predictor.py): further calls on the same
volume only decode, which is what makes a click cheap.
"""
import hashlib
from pathlib import Path

import numpy as np

from samunet.device import resolve_device
from samunet.errors import SamunetError
from samunet.imageio import from_sitk, read_image, to_sitk
from samunet.inference.model_selection import trained_folds
from samunet.inference.prompted_predictor import PromptedPredictor
from samunet.inference.write_prediction import restored_labels
from samunet.models.amp import default_amp
from samunet.preprocessing.preprocess_case import preprocess_case
from samunet.prompts.mapping import class_prompts
from samunet.prompts.prompt_file import FORMAT, PromptFile


class Segmenter:
    def __init__(self, predictor):
        self.predictor = predictor
        self._volume = None  # (key, data, properties)

    @classmethod
    def from_model_folder(cls, folder, folds=None, checkpoint_name="checkpoint_final.pth", device=None, amp=None):
        """A prompted model's results folder (<strategy>__<backbone>__prompts-<kind>); folds default to
        every fold holding the checkpoint (several are averaged)."""
        folds = list(folds) if folds else trained_folds(folder, checkpoint_name)
        if not folds:
            raise SamunetError(f"{folder}: no fold holds {checkpoint_name}")
        device = resolve_device(device)
        return cls(PromptedPredictor.from_model_folder(folder, folds, checkpoint_name, device, amp or default_amp(device)))

    def _prepare(self, image):
        """Read and preprocess a volume, or reuse the last one when it is the same."""
        images = image if isinstance(image, (list, tuple)) else [image]
        loaded = [read_image(i) if isinstance(i, (str, Path)) else from_sitk(i) for i in images]
        digest = hashlib.sha256()
        for array, geometry in loaded:
            digest.update(np.ascontiguousarray(array).tobytes())
            digest.update(repr(geometry).encode())
        key = digest.hexdigest()
        if self._volume is None or self._volume[0] != key:
            channels = len(self.predictor.dataset_json["channel_names"])
            if len(loaded) != channels:
                raise SamunetError(f"the model takes {channels} channel(s) per case, got {len(loaded)} image(s)")
            data, _, properties = preprocess_case([a for a, _ in loaded], None, loaded[0][1], self.predictor.plan)
            self._volume = (key, data, properties, loaded[0][0].shape, loaded[0][1])
        return self._volume

    def segment(self, image, boxes=None, points=None):
        """image: a SimpleITK image, a path, or a list of them (one per channel); boxes {class: [[x0, y0, z0,
        x1, y1, z1], ...]}; points {class: [[x, y, z, 1 or 0], ...]} -> SimpleITK label image."""
        key, data, properties, shape, geometry = self._prepare(image)
        classes = {}
        for field, given in (("boxes", boxes or {}), ("points", points or {})):
            for name, items in given.items():
                classes.setdefault(str(name), {})[field] = [list(i) for i in items]
        if not classes:
            raise SamunetError("segment needs boxes or points")
        content = {"format": FORMAT, "coordinates": "voxel", "provenance": "user", "cases": {"image": classes}}
        voxel = PromptFile(content, self.predictor.plan["labels"], "prompts").voxel_prompts("image", shape, geometry)
        size = self.predictor.mapper.size
        prompts = [p for value, cp in voxel.items() for p in class_prompts(value, cp.boxes, cp.points, properties, size)]
        probs = self.predictor.predict_with_prompts(data, prompts, volume_key=key)
        _, labels = restored_labels(probs, properties)
        return to_sitk(labels, geometry)

