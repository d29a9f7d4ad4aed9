"""Slice-wise prediction of one preprocessed volume with one or more trained folds.

Same preprocessing as training (from the copied plan) -> per slice: the plan's encoder input (planes,
window, projection) and resize to the backbone's input size -> softmax at input size (mean over folds and
over mirroring along the axes every model was trained with, inference/mirroring.py) -> resize back to the
preprocessed slice -> (K+1, S, H, W) -> restore_probabilities (un-resample, un-crop, un-transpose) ->
argmax, in the original array space; written with the original spacing, origin and direction.

Mirrored passes cost an encoder pass each, so by default they run only where they matter: on the slices
whose un-mirrored prediction holds foreground, and MIRROR_NEIGHBOURS slices either side of them (the
Dice this keeps is measured in docs/benchmarks.md); every other slice keeps its un-mirrored probabilities.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samunet.errors import SamunetError
from samunet.file_io import read_json
from samunet.inference.mirroring import allowed_mirroring_axes, tensor_flips, warn_if_unrecorded
from samunet.layout import PLANS_FILE, configuration_name, fold_folder
from samunet.models.amp import amp_dtype, autocast_factory
from samunet.models.build import CHANNEL_VIEWS_KEY, FUSED_SLICES_KEY, PROMPTS_KEY
from samunet.models.checkpoint import load_model
from samunet.models.inference_precision import for_inference
from samunet.models.input_mapping import InputMapper
from samunet.models.pretrained_encoder import METADATA_KEY as PRETRAINED_KEY
from samunet.models.slice_fusion import gather_neighbours, neighbour_indices
from samunet.planners.plan_file import PlanView, read_plan

MIRROR_NEIGHBOURS = 1
# Slices per forward pass by default: 8, more for small inputs (16 at 96), which encode faster per slice
# in larger batches on a CPU (docs/benchmarks.md "Prediction cost") and need little memory.
BATCH_SLICES, BATCH_PIXELS, MAX_BATCH_SLICES = 8, 16 * 96 * 96, 16


def default_batch_slices(input_size):
    return max(BATCH_SLICES, min(MAX_BATCH_SLICES, BATCH_PIXELS // input_size**2))


def _nearest_inverse(small, large, device):
    """(small x large) matrix averaging, for each slice pixel, the input-size pixels that a nearest resize
    (centre-aligned, as training targets are made) assigned to it."""
    source = ((torch.arange(large, device=device) + 0.5) * small / large).floor().long().clamp_max(small - 1)
    matrix = torch.zeros(small, large, device=device)
    matrix[source, torch.arange(large, device=device)] = 1.0
    return matrix / matrix.sum(dim=1, keepdim=True)


def resize_probabilities(probs, size):
    """(B, K, S, S) input-size probabilities -> (B, K, h, w) at the slice size.

    Where the slice is smaller than the input, each slice pixel takes the mean of the input pixels that
    represent it (the exact inverse of the training targets' nearest resize); where it is larger, bilinear."""
    h, w = size
    if h > probs.shape[-2] or w > probs.shape[-1]:
        return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
    rows = _nearest_inverse(h, probs.shape[-2], probs.device)
    cols = _nearest_inverse(w, probs.shape[-1], probs.device)
    return torch.einsum("hi,bkij,wj->bkhw", rows, probs, cols)


def check_provenance(metadata, folder, plan, path):
    """A checkpoint must be the configuration its folder names (<strategy>__<backbone>[@pretrained]) and segment the
    classes of the folder's plan."""
    made_for = configuration_name(metadata["strategy"], metadata["backbone"],
                                  (metadata.get(PRETRAINED_KEY) or {}).get("name"),
                                  (metadata.get(PROMPTS_KEY) or {}).get("kind"))
    if "__" in folder.name and folder.name != made_for:
        raise SamunetError(f"{path}: a checkpoint of {made_for}, but it lies in the folder of {folder.name}")
    classes = PlanView(plan).class_names
    if list(metadata["class_names"]) != classes:
        raise SamunetError(f"{path}: trained for classes {metadata['class_names']}, but the plan of {folder.name} "
                           f"has {classes}")


class SlicePredictor:
    def __init__(self, models, plan, dataset_json, device=None, amp="off", batch_slices=None, use_tta=True):
        self.plan, self.dataset_json = plan, dataset_json
        self.device = device or torch.device("cpu")
        self.models = [for_inference(m, amp_dtype(amp)) for m in models]  # taken over: changed in place
        meta = self.models[0].metadata
        # use_tta=False: no mirroring; otherwise along the slice axes every model was trained to see mirrored
        self.mirroring_axes = allowed_mirroring_axes(m.metadata for m in self.models) if use_tta else []
        self.flips = tensor_flips(self.mirroring_axes)
        view = PlanView(plan)
        self.mapper = InputMapper(view.windows, view.encoder_input, meta["input_range"], meta["input_size"],
                                  self.device, meta.get(FUSED_SLICES_KEY, 0))
        if any(m.metadata.get(CHANNEL_VIEWS_KEY, 1) != self.mapper.views for m in self.models):
            raise SamunetError(f"the models encode {meta.get(CHANNEL_VIEWS_KEY, 1)} image(s) per slice, but the plan's "
                               f"encoder_input gives {self.mapper.views}: was the plan edited after training?")
        self.autocast = autocast_factory(self.device, amp)
        self.batch_slices = batch_slices or default_batch_slices(meta["input_size"])
        self.num_outputs = self.models[0].num_outputs
        self.mirror_all_slices = False  # True: mirrored passes on every slice (samunet_predict --tta-all-slices)

    @classmethod
    def from_model_folder(cls, model_folders, folds, checkpoint_name="checkpoint_final.pth", device=None, amp="off",
                          base_checkpoint=None, batch_slices=None, use_tta=True):
        """Models of the given folds of one or more results subfolders (<strategy>__<backbone>/) of one
        dataset and backbone: all of them are averaged."""
        folders = [Path(f) for f in (model_folders if isinstance(model_folders, (list, tuple)) else [model_folders])]
        device = device or torch.device("cpu")
        plan = read_plan(folders[0] / PLANS_FILE)
        models = []
        for folder in folders:
            for fold in folds:
                path = fold_folder(folder, fold) / checkpoint_name
                if not path.is_file():
                    raise SamunetError(f"{path}: checkpoint not found (is fold {fold} trained?)")
                model = load_model(path, checkpoint=base_checkpoint, device=device)[0]
                check_provenance(model.metadata, folder, plan, path)
                if use_tta:
                    warn_if_unrecorded(model.metadata, path)
                models.append(model)
        if len({(m.metadata["backbone"], m.metadata["input_size"], m.metadata[FUSED_SLICES_KEY]) for m in models}) > 1:
            raise SamunetError("an ensemble must share one backbone, input size and number of fused slices")
        return cls(models, plan, read_json(folders[0] / "dataset.json"), device, amp, batch_slices, use_tta)

    @torch.no_grad()
    def _chunk_probabilities(self, model, data, chunk, axes, kept):
        """(len(chunk), K+1, S, S) softmax of one model on slices `chunk`, the input mirrored along `axes`
        (and the output back). `kept`: slice index -> embedding in this pass, updated: each slice is encoded
        once, also when the head fuses it into its neighbours' predictions."""
        num_slices, fused = data.shape[1], self.mapper.fused_slices
        needed = sorted({j for s in chunk for j in neighbour_indices(s, fused, num_slices)} - set(kept))
        if needed:
            images = self.mapper.images([self.mapper.planes(data, j) for j in needed])
            with self.autocast():
                kept.update(zip(needed, model.encode(images.flip(axes) if axes else images)))
        with self.autocast():
            logits = model.decode(gather_neighbours(kept, chunk, fused, num_slices))
        probs = torch.softmax(logits.float(), dim=1)
        return probs.flip(axes) if axes else probs

    def _probabilities(self, data, slice_indices, flips):
        """(K+1, len(slice_indices), H, W) at the preprocessed slice size: the mean over folds and the
        given flips. `slice_indices` ascending (a pass keeps only the embeddings its next chunks need)."""
        out = np.zeros((self.num_outputs, len(slice_indices), *data.shape[2:]), dtype=np.float32)
        for model in self.models:
            for axes in flips:
                kept = {}
                for start in range(0, len(slice_indices), self.batch_slices):
                    chunk = slice_indices[start : start + self.batch_slices]
                    probs = self._chunk_probabilities(model, data, chunk, axes, kept)
                    probs = resize_probabilities(probs, data.shape[2:]).permute(1, 0, 2, 3)
                    out[:, start : start + len(chunk)] += probs.cpu().numpy()
                    kept = {j: e for j, e in kept.items() if j >= chunk[-1] - self.mapper.fused_slices}
        return out / (len(self.models) * len(flips))

    def predict_preprocessed(self, data):
        """data (C, S, H, W) normalised -> probabilities (K+1, S, H, W) in preprocessed space."""
        num_slices = data.shape[1]
        out = self._probabilities(data, list(range(num_slices)), self.flips[:1])
        mirrored = self.flips[1:]
        if mirrored:
            found = np.flatnonzero((out.argmax(0) > 0).any(axis=(1, 2)))
            near = {min(max(s + d, 0), num_slices - 1) for s in found
                    for d in range(-MIRROR_NEIGHBOURS, MIRROR_NEIGHBOURS + 1)}
            slices = list(range(num_slices)) if self.mirror_all_slices else sorted(near)
            if slices:
                passes = len(self.flips)
                out[:, slices] = (out[:, slices] + (passes - 1) * self._probabilities(data, slices, mirrored)) / passes
        return out
