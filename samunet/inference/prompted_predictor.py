"""Prediction of one preprocessed volume from prompts, with a model trained with them (--prompts).

Only the slices that carry a prompt are encoded, and their encoder outputs are kept for the volume:
prompting the same volume again (a click added, a box moved) decodes, it does not encode again. Each
prompt gives one mask (the head's single-mask token); masks of several folds are averaged, masks of one
class are united, and classes are composed into a label map (prompts/tensors.py class_probabilities).
Prompted prediction does not mirror: the prompt, not the model's orientation prior, places the structure.
"""
from dataclasses import replace

import numpy as np
import torch

from samunet.errors import SamunetError
from samunet.inference.predictor import SlicePredictor, resize_probabilities
from samunet.models.build import PROMPTS_KEY
from samunet.models.slice_fusion import gather_neighbours, neighbour_indices
from samunet.prompts.derivation import MEAN_GROWTH, PromptRule, prompts_from_labels
from samunet.prompts.tensors import class_probabilities, in_prompt_order, prompt_groups


class PromptedPredictor(SlicePredictor):
    def __init__(self, models, *args, **kwargs):
        super().__init__(models, *args, **kwargs)
        kinds = {(m.metadata.get(PROMPTS_KEY) or {}).get("kind") for m in self.models}
        if None in kinds or len(kinds) != 1:
            raise SamunetError("prompted prediction needs models trained with the same --prompts kind "
                               f"(found {', '.join(sorted(str(k) for k in kinds))})")
        # prompts derived from masks: of the kind trained, boxes grown by half the training jitter
        self.rule = PromptRule(**self.models[0].metadata[PROMPTS_KEY])
        self._volume, self._embeddings = None, {}

    @torch.no_grad()
    def _encoded(self, data, slices, volume_key):
        """Per model the encoder outputs of `slices` as the model's head takes them (models/slice_fusion.py
        gather_neighbours: with their neighbours and channels when it fuses them), each slice encoded once
        per volume."""
        if volume_key is None or volume_key != self._volume:
            self._volume, self._embeddings = volume_key, {}
        num_slices, fused = data.shape[1], self.mapper.fused_slices
        needed = sorted({j for s in slices for j in neighbour_indices(s, fused, num_slices)})
        missing = [s for s in needed if s not in self._embeddings]
        for start in range(0, len(missing), self.batch_slices):
            chunk = missing[start : start + self.batch_slices]
            images = self.mapper.images([self.mapper.planes(data, s) for s in chunk])
            with self.autocast():
                encoded = [m.encode(images).float() for m in self.models]
            for i, s in enumerate(chunk):
                self._embeddings[s] = [e[i] for e in encoded]
        return [gather_neighbours({s: e[m] for s, e in self._embeddings.items()}, slices, fused, num_slices)
                for m in range(len(self.models))]

    @torch.no_grad()
    def predict_with_prompts(self, data, prompts, volume_key=None):
        """data (C, S, H, W) normalised, prompts on its slices at input size -> probabilities (K+1, S, H, W).
        `volume_key` names the volume (any hashable): the same key again reuses its encoder outputs."""
        _, num_slices, h, w = data.shape
        out = np.zeros((self.num_outputs, num_slices, h, w), dtype=np.float32)
        out[0] = 1.0
        slices = sorted({p.slice_index for p in prompts})
        if not slices:
            return out
        row = {s: i for i, s in enumerate(slices)}
        local = [replace(p, slice_index=row[p.slice_index]) for p in prompts]
        groups = prompt_groups(local, self.device)
        masks = None
        for model, embeddings in zip(self.models, self._encoded(data, slices, volume_key)):
            with self.autocast():
                logits = [model.decode_prompts(embeddings, g) for g in groups]
            probs = [torch.sigmoid(m.float()) for m in in_prompt_order(groups, logits)]
            masks = probs if masks is None else [a + b for a, b in zip(masks, probs)]
        masks = [m / len(self.models) for m in masks]
        composed = class_probabilities(local, masks, self.num_outputs, (len(slices), *masks[0].shape), self.device)
        composed = resize_probabilities(composed, (h, w)).cpu().numpy()
        out[:, slices] = composed.transpose(1, 0, 2, 3)
        return out

    def prompts_from_mask(self, seg, growth=MEAN_GROWTH):
        """(S, H, W) label map in preprocessed space -> per slice and class present, the prompts of the kind
        the model was trained with, boxes grown by `growth` times its training jitter (prompts/derivation.py)."""
        present = [s for s in range(seg.shape[0]) if seg[s].any()]
        if not present:
            return []
        labels = self.mapper.labels([seg[s] for s in present]).cpu().numpy()
        return [replace(p, slice_index=present[p.slice_index])
                for p in prompts_from_labels(labels, self.rule, growth=growth)]
