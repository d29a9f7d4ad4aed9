"""Where prompted prediction's prompts come from (`--prompts FILE|FOLDER|auto`), and what that makes of the
result's provenance: `user`, `model` or `ground_truth` (prompts from reference labels), against `none` for
prompt-free prediction. Summaries carry it so that results prompted from references are never mistaken
for automatic ones.

- a prompts file (prompts/prompt_file.py): boxes and points in the original image's coordinates;
  provenance as the file says (default user);
- a folder of masks `{case}{ending}` in the images' geometry (a coarse segmentation, another tool's
  output): per slice and class, the prompt of the model's kind derived from the mask; provenance
  `--prompt-provenance` (default user). A folder samunet_predict wrote passes its own on: `model` when
  it was predicted prompt-free or by a model, `ground_truth` or `user` when it was prompted so;
- `auto`: a prompt-free first pass (mirroring as samunet_predict does) prompts the model: that of the
  configuration trained without prompts beside the prompted one when there is one (trained for the
  prompt-free task alone, it is the better first pass: docs/benchmarks.md), else the prompted model's own
  prompt-free output; provenance `model`.

A model's masks (`auto`'s first pass, folders of provenance `model`) hold false positives, and a prompted
model fills any box it is given: for a class that is one piece in the training labels (the plan's
single_component_labels) boxes are drawn only around the largest connected piece of its mask.

Boxes derived from masks grow outwards by a share of the model's training jitter (prompts/derivation.py):
half, training's mean move, for reference and user masks; MODEL_MASK_GROWTH for a model's masks (`auto`,
and folders of provenance `model`), which tend to stop short of the structure's border, so a tight box
cuts it short again (the value was chosen on tuning cases, benchmarks/prompted_box_growth.py). The
record in prediction_info.json says which share was used; `--box-growth` sets it.
"""
from pathlib import Path

import numpy as np

from samunet.connected_components import keep_largest_component
from samunet.errors import SamunetError
from samunet.imageio import read_header, read_image
from samunet.inference.prediction_info import provenance_of
from samunet.planners.plan_file import PlanView
from samunet.preprocessing.preprocess_case import labels_like_case
from samunet.preprocessing.restore_geometry import original_geometry
from samunet.prompts.derivation import MEAN_GROWTH
from samunet.prompts.mapping import class_prompts
from samunet.prompts.prompt_file import PROVENANCES, PromptFile


MODEL_MASK_GROWTH = 1.5


def mask_growth(provenance, growth=None):
    if growth is not None:
        return float(growth)
    return MODEL_MASK_GROWTH if provenance == "model" else MEAN_GROWTH


class PromptSource:
    """A case's prompts, and its probabilities from them (`predict`: what samunet_predict writes)."""

    def predict(self, predictor, case_id, data, properties):
        return predictor.predict_with_prompts(data, self.prompts(predictor, case_id, data, properties), volume_key=case_id)

    def first_pass_predictor(self, predictor):
        """The predictor of a prompt-free first pass (it alone mirrors), None without one."""
        return None


class FilePrompts(PromptSource):
    def __init__(self, path, labels):
        self.file = PromptFile.read(Path(path), labels)
        self.provenance = self.file.provenance
        self.record = {"source": str(Path(path).resolve()), "provenance": self.provenance,
                       "coordinates": self.file.coordinates}
        self._voxel = {}

    def select(self, cases):
        """Check the file against the input cases (names, coordinates inside each image); returns the
        cases to predict: those with prompts."""
        unknown = sorted(set(self.file.cases) - set(cases))
        if unknown:
            raise SamunetError(f"{self.file.path}: prompts for case(s) not in the input folder: {', '.join(unknown[:5])}")
        for case_id in self.file.cases:
            shape, geometry = read_header(cases[case_id][0])
            self._voxel[case_id] = self.file.voxel_prompts(case_id, shape, geometry)
        return {c: p for c, p in cases.items() if c in self.file.cases}

    def prompts(self, predictor, case_id, data, properties):
        size = predictor.mapper.size
        return [p for value, cp in self._voxel[case_id].items()
                for p in class_prompts(value, cp.boxes, cp.points, properties, size)]


class MaskFolderPrompts(PromptSource):
    def __init__(self, folder, file_ending, provenance=None, growth=None, single_component_labels=()):
        self.folder, self.file_ending = Path(folder), file_ending
        recorded = provenance_of(self.folder)  # None: samunet_predict did not write the folder
        inherited = {None: "user", "none": "model"}.get(recorded, recorded)
        # masks that came from reference-derived prompts stay reference-derived, whatever is claimed
        if recorded == "ground_truth" and provenance not in (None, "ground_truth"):
            raise SamunetError(f"{self.folder}: predicted from ground-truth prompts (its prediction_info.json); "
                               f"its masks cannot have provenance '{provenance}'")
        self.provenance = provenance or inherited
        if self.provenance not in PROVENANCES:
            raise SamunetError(f"prompt provenance '{self.provenance}': one of {', '.join(PROVENANCES)}")
        self.growth = mask_growth(self.provenance, growth)
        self.largest_piece_labels = list(single_component_labels) if self.provenance == "model" else []
        self.record = {"source": str(self.folder.resolve()), "provenance": self.provenance, "box_growth": self.growth,
                       "largest_piece_labels": self.largest_piece_labels}

    def _path(self, case_id):
        return self.folder / f"{case_id}{self.file_ending}"

    def select(self, cases):
        missing = [self._path(c).name for c in cases if not self._path(c).is_file()]
        if missing:
            raise SamunetError(f"{self.folder}: no mask for {len(missing)} case(s): {', '.join(missing[:5])}")
        return cases

    def prompts(self, predictor, case_id, data, properties):
        path = self._path(case_id)
        seg, geometry = read_image(path)
        if list(seg.shape) != list(properties["original_shape"]):
            raise SamunetError(f"{path}: shape {tuple(seg.shape)} differs from the image's {tuple(properties['original_shape'])}")
        differing = original_geometry(properties).matches(geometry)
        if differing:
            raise SamunetError(f"{path}: {', '.join(differing)} differ from the image's")
        unknown = sorted(set(np.unique(seg).tolist()) - set(range(predictor.num_outputs)))
        if unknown:
            raise SamunetError(f"{path}: holds label value(s) {', '.join(map(str, unknown[:5]))}, which the model "
                               f"has no class for (it has 1..{predictor.num_outputs - 1})")
        seg = keep_largest_component(seg, self.largest_piece_labels)
        return predictor.prompts_from_mask(labels_like_case(seg, properties), self.growth)


class AutoPrompts(PromptSource):
    provenance = "model"

    def __init__(self, growth=None, single_component_labels=()):
        self.growth = mask_growth("model", growth)
        self.largest_piece_labels = list(single_component_labels)
        self.first_pass = None
        self.record = {"source": "auto", "provenance": "model", "box_growth": self.growth,
                       "largest_piece_labels": self.largest_piece_labels,
                       "first_pass": "the prompted model's own prompt-free output"}

    def use_first_pass(self, predictor, name):
        """Predict the first pass with this (prompt-free) predictor, named `name` in the record."""
        self.first_pass = predictor
        self.record["first_pass"] = name

    def first_pass_predictor(self, predictor):
        return self.first_pass or predictor

    def select(self, cases):
        return cases

    def predict(self, predictor, case_id, data, properties):
        first = self.first_pass_predictor(predictor).predict_preprocessed(data).argmax(0)
        first = keep_largest_component(first, self.largest_piece_labels)
        return predictor.predict_with_prompts(data, predictor.prompts_from_mask(first, self.growth), volume_key=case_id)


def prompt_source(spec, plan, file_ending, provenance=None, growth=None):
    """`--prompts` value -> a source: 'auto', a folder of masks, or a prompts file."""
    if spec == "auto":
        if provenance not in (None, "model"):
            raise SamunetError("--prompts auto: the prompts come from the model; --prompt-provenance does not apply")
        return AutoPrompts(growth, PlanView(plan).single_component_labels)
    path = Path(spec)
    if path.is_dir():
        return MaskFolderPrompts(path, file_ending, provenance, growth, PlanView(plan).single_component_labels)
    if not path.is_file():
        raise SamunetError(f"{path}: --prompts takes a prompts file, a folder of masks, or auto")
    if provenance is not None:
        raise SamunetError(f"{path}: a prompts file states its own provenance; --prompt-provenance is for mask folders")
    if growth is not None:
        raise SamunetError(f"{path}: a prompts file gives its boxes as they are; --box-growth is for masks and auto")
    return FilePrompts(path, plan["labels"])
